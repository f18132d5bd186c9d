"""`nanochat-hf serve`: an OpenAI-compatible chat server with a chat page, on the chat engine.

- `app`: the FastAPI application (`create_app`, `ServeLimits`): routes, checks, streaming.
- `protocol`: OpenAI's request and response shapes, and the request checks.
- `scheduler`: the generation worker, batching concurrent requests into `ChatEngine.generate_batch`.
- `server`: uvicorn on a socket bound first.
- `page.html`: the single-file chat page served at `/`.

Needs the `serve` extra (`pip install nanochat-hf[serve]`: fastapi, uvicorn).
"""
