"""Options that several commands take are declared once: the same default, type and help in every command."""

from __future__ import annotations

import click
import pytest

from ftprobe.cli import cli
from ftprobe.cli._options import arch_value, workers_count

SHARED = ["--device", "--batch-size", "--limit", "--seed", "--workers", "--trust-checkpoint", "--ema", "--arch",
          "--preprocess", "--size"]
# Options of the same name that mean something else in a command (the image side of a feature visualisation, the
# seed of its start image), and the one-model --arch of `ftprobe layers`.
OWN_MEANING = {("visualize", "--size"), ("visualize", "--seed"), ("layers", "--arch")}


def _declarations() -> dict[str, dict[str, click.Option]]:
    out: dict[str, dict[str, click.Option]] = {}
    for name, command in cli.commands.items():
        for p in command.params:
            if isinstance(p, click.Option) and p.opts[0] in SHARED and (name, p.opts[0]) not in OWN_MEANING:
                out.setdefault(p.opts[0], {})[name] = p
    return out


def test_each_shared_option_has_one_declaration_in_every_command():
    decl = _declarations()
    assert set(decl["--device"]) == {"compare", "top-images", "visualize"}
    assert set(decl["--trust-checkpoint"]) == {"compare", "top-images", "visualize", "layers"}
    for flag, per_command in decl.items():
        seen = {(p.default, p.help, p.multiple, p.is_flag, repr(p.type)) for p in per_command.values()}
        assert len(seen) == 1, f"{flag} differs between {sorted(per_command)}: {seen}"
    assert decl["--device"]["visualize"].default == "auto"  # as in compare: a GPU when there is one
    assert decl["--workers"]["top-images"].default == "auto"


def test_workers_and_arch_values_read_as_the_api_takes_them():
    assert workers_count("3", "cpu") == 3
    assert workers_count("auto", "cpu") == 0
    with pytest.raises(click.BadParameter, match="not a number or auto"):
        workers_count("many", "cpu")
    assert [arch_value(()), arch_value(("timm:resnet18",)), arch_value(("a", "b"))] == [None, "timm:resnet18",
                                                                                        ["a", "b"]]


def test_visualize_refuses_a_device_torch_does_not_know(run_cli):
    r = run_cli("visualize", "torchvision:resnet18", "--layer", "layer4", "--channels", "0", "--device", "gpu7")
    assert r.exit_code != 0
    assert "--device 'gpu7' is not a device torch knows; use auto, cpu, cuda or cuda:N" in r.stderr
