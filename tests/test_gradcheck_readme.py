"""The README's gradcheck examples run and print what the README shows, up to the digits of
rounding noise (errors below 1e-6 and where they sit), which vary between machines."""

import contextlib
import io
import re
from pathlib import Path

SECTION = "## Check your own derivatives"


def section_blocks(kind: str) -> list[str]:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + len(SECTION))]
    return re.findall(rf"```{kind}\n(.*?)```", section, flags=re.S)


def without_noise(text: str) -> list[str]:
    """Each line, with a rel err below 1e-6 and the rest of its numbers masked."""
    out = []
    for line in text.strip().splitlines():
        found = re.search(r"rel err ([0-9.e+-]+)", line)
        if found and float(found.group(1)) < 1e-6:
            line = (
                line[: found.start()]
                + "rel err <noise>"
                + re.sub(r".*?(\(\d+ checked)", r" \1", line[found.end() :])
            )
        out.append(line)
    return out


def test_the_planted_bug_example_prints_what_the_readme_shows():
    code, activation, _ = section_blocks("python")
    shown = section_blocks("text")[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    assert without_noise(printed.getvalue()) == without_noise(shown)
    assert "<- inherited from layer 1" in shown and "manual -0.166931 vs jax.grad" in shown
    exec(compile(activation, "README.md", "exec"), {"__name__": "readme_activation"})
