"""An experiment's last line names its metrics file and the figures this run drew."""

import os
import time

from experiments import common


def test_finish_names_this_run_s_figures_beside_metrics(tmp_path, capsys):
    stale = tmp_path / "old.png"
    stale.write_bytes(b"png")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))  # left by an earlier run
    common.parser("demo", None)  # a run starts
    for name in ("b.png", "a.png"):
        (tmp_path / name).write_bytes(b"png")
    assert common.finish(tmp_path, {"x": 1}, {"it works": True}) is True
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (
        f"conclusion held; metrics in {tmp_path / 'metrics.json'}; "
        f"figures: {tmp_path / 'a.png'}, {tmp_path / 'b.png'}"
    )
