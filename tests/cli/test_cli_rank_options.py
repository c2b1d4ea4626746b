"""Compression options through the CLI: an option the chosen --rank-policy / --method does not read is an
error naming the option and the choice (never silently ignored); the flags come from RunConfig's fields."""
import pytest

from pela_export.cli.main import main

DEIT = "tiny_timm:deit_tiny_64"


def test_ratio_with_the_energy_policy_is_an_error_naming_the_policy(capsys, tmp_path):
    out = tmp_path / "o"
    code = main(["compress", DEIT, "--ratio", "4", "--rank-policy", "energy", "--energy", "0.9", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--ratio is only used with --rank-policy ratio or sensitivity, not by --rank-policy energy" in err
    assert "drop --ratio" in err
    assert not (out / "ranks.md").exists() and not (out / "lowrank.json").exists()


@pytest.mark.parametrize("args,needle", [
    (["--ratio", "3", "--rank-policy", "budget", "--param-budget", "0.5"], "not by --rank-policy budget"),
    (["--rank-policy", "energy", "--energy", "0.9", "--candidate-ranks", "4,8"], "--candidate-ranks is only used"),
    (["--method", "whiten", "--asvd-alpha", "0.5"], "not by --method whiten"),
])
def test_unused_options_are_errors(capsys, args, needle):
    assert main(["compress", DEIT, *args]) == 2
    assert needle in capsys.readouterr().err


def test_help_says_which_policy_reads_each_option(capsys):
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--ratio K" in text and "default 2" in text and "used by --rank-policy ratio/sensitivity" in text
    assert "used by --method asvd" in text and "--energy" in text and "used by --rank-policy energy" in text
