"""The views leave the user's plotting alone."""

from __future__ import annotations

import os
import subprocess
import sys


def test_importing_and_drawing_leaves_the_matplotlib_backend_and_pyplot_alone(tmp_path):
    script = (
        "import sys, matplotlib\n"
        "import lightning_dyn, lightning_dyn.report\n"
        "from lightning_dyn.callbacks.figures import add_figure, series_figure\n"
        "from torch.utils.tensorboard import SummaryWriter\n"
        "writer = SummaryWriter(sys.argv[1])\n"
        "add_figure(writer, 'dyn/figure', series_figure([{'step': 1, 'dyn/x': 2.0}], ['dyn/x']), 1)\n"
        "writer.close()\n"
        "import matplotlib.pyplot as plt\n"
        "print(matplotlib.get_backend(), len(plt.get_fignums()))\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["svg", "0"]  # the user's backend, no figure left open in pyplot
    assert any(tmp_path.iterdir())  # the figure was written
