"""Take docs/serve.png: `vidgen serve` with the embedded shapes model, one clip made in a
headless Chromium, the whole page captured.

    python tools/serve_screenshot.py --out docs/serve.png

Needs the web extra and Debian's chromium + chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver).
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VIDEO = "document.querySelector('#clip video')"


def start_server(port: int, log: Path) -> tuple[subprocess.Popen, str]:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "vidgen", "serve", "--port", str(port)], env=env,
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(600):
        for line in log.read_text().splitlines():
            if line.startswith("vidgen serve: http://"):
                return server, line.split()[2]
        if server.poll() is not None:
            break
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"vidgen serve did not start:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/serve.png")
    parser.add_argument("--prompt", default="a red circle moving left")
    parser.add_argument("--seed", default="0")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(tempfile.mkdtemp(prefix="vidgen-screenshot-")) / "server.log"
    server, url = start_server(port, log)
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 "--autoplay-policy=no-user-gesture-required", "--hide-scrollbars"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 600)
        prompt = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#prompt textarea"))
        prompt.send_keys(args.prompt)
        browser.find_element(By.CSS_SELECTOR, "#random-seed input").click()
        seed = browser.find_element(By.CSS_SELECTOR, "#seed textarea, #seed input")
        seed.clear()
        seed.send_keys(args.seed)
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        wait.until(lambda b: b.execute_script(f"const v = {VIDEO}; return v !== null && v.readyState >= 2"))
        time.sleep(1.0)  # a moment of playing, so the frame shown is not the first
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        Path(args.out).write_bytes(base64.b64decode(shot["data"]))  # the whole page, not only the window
        print(f"wrote {args.out}")
    finally:
        browser.quit()
        server.send_signal(signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    main()
