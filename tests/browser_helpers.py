"""Headless Chromium driven through chromedriver's W3C WebDriver HTTP API (plain httpx, no extra package).

`HeadlessChromium.available()` says whether Debian's `chromium` and `chromium-driver` are installed.
"""

import base64
import os
import shutil
import socket
import subprocess
import time

import httpx


ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class HeadlessChromium:
    @staticmethod
    def available() -> bool:
        return _chromium() is not None and shutil.which("chromedriver") is not None

    def __init__(self, profile_dir, width: int = 1000, height: int = 700):
        port = _free_port()
        self.driver = subprocess.Popen(
            [shutil.which("chromedriver"), f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        for _ in range(500):
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        args = ["--headless=new", "--disable-gpu", f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium's sandbox cannot run as root (CI containers)
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {"binary": _chromium(), "args": args}}
        session = self.http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}}).json()["value"]
        if "sessionId" not in session:
            self.driver.terminate()
            raise RuntimeError(f"chromedriver could not start Chromium: {session}")
        self.session = f"/session/{session['sessionId']}"

    def _call(self, method: str, path: str, body: dict | None = None):
        response = self.http.request(method, self.session + path, json=body)
        value = response.json()["value"]
        if response.status_code != 200:
            raise RuntimeError(f"WebDriver {path}: {value}")
        return value

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def clear(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/clear", {})

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def run(self, script: str, *args):
        """Run JavaScript in the page (`return ...` gives a value)."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, what: str, attempts: int = 1500):
        """Poll until the JavaScript expression `script` is truthy (a wait, not a timed assertion)."""
        for _ in range(attempts):
            value = self.run(f"return {script};")
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"the page never showed: {what}")

    def screenshot(self, path) -> None:
        with open(path, "wb") as file:
            file.write(base64.b64decode(self._call("GET", "/screenshot")))

    def quit(self) -> None:
        try:
            self.http.delete(self.session)
        finally:
            self.driver.terminate()
            self.driver.wait(30)
            self.http.close()
