"""What the serve tests share: a tiny model folder whose defaults are already fast (2 keyframes of
32x32, 2 steps), and a `vidgen serve` subprocess on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from launch_helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def fast_model(image_model: Path, folder: Path) -> Path:
    """The tiny SD-layout image model inflated, with defaults a test can run as they are."""
    from vidgen import VideoPipeline
    from vidgen.cli import main

    inflated = folder.with_name(folder.name + "-inflated")
    assert main(["inflate", "--image-model", str(image_model), "--out", str(inflated), "--max-frames", "8",
                 "--frames", "2"]) == 0
    pipe = VideoPipeline.from_pretrained(inflated)
    defaults = pipe.model.index.defaults
    defaults.num_inference_steps, defaults.height, defaults.width, defaults.guidance_scale = 2, 32, 32, 3.0
    pipe.save_pretrained(folder)
    return folder


class Server:
    """`python -m vidgen serve` in a subprocess, until `stop`."""

    def __init__(self, model: Path, out: Path, log: Path):
        self.port, self.log_path, self.clips = free_port(), log, out
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               "PYTHONUNBUFFERED": "1"}
        self.log = open(log, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "vidgen", "serve", "--model", str(model), "--port",
                                         str(self.port), "--out", str(out)], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.url = self._wait_for_address()

    def output(self) -> str:
        return self.log_path.read_text()

    def _wait_for_address(self, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if line.startswith("vidgen serve: http://"):
                    return line.split()[2]
            if self.process.poll() is not None:
                raise AssertionError(f"vidgen serve exited ({self.process.returncode}):\n{self.output()}")
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"vidgen serve printed no address in {timeout:.0f} s:\n{self.output()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as `kill` sends it; returns the exit code (143 for a clean stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        return self.process.returncode
