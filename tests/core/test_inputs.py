"""Bad input gets a clear ValueError."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from random_llada import MASK_ID

from vllm_elastic.core.generate import generate
from vllm_elastic.core.settings import DecodeSettings

BAD_SETTINGS = [
    ({"gen_length": 0}, "gen_length"),
    ({"gen_length": -4}, "gen_length"),
    ({"window": 0}, "window"),
    ({"gamma": 1.5}, "gamma"),
    ({"gamma": -0.1}, "gamma"),
    ({"threshold": 0.0}, "threshold"),
    ({"threshold": 1.2}, "threshold"),
    ({"method": "magic"}, "method"),
    ({"gamma": "high"}, "gamma"),
    ({"window": "3.5"}, "window"),
    ({"block_caching": "maybe"}, "block_caching"),
    ({"colour": 1}, "unknown setting"),
    ({"method": "llada", "steps": 0}, "steps"),
    ({"seed": 2**64}, "seed"),
    ({"temperature": "inf"}, "temperature"),
    ({"logprobs": -2}, "logprobs"),
    ({"refresh_start": "middle"}, "refresh_start"),
    ({"refresh_start": "first"}, "needs refresh_mode 'deferred'"),
]


@pytest.mark.parametrize("raw,needle", BAD_SETTINGS)
def test_bad_settings_raise(raw, needle):
    with pytest.raises(ValueError, match=needle):
        DecodeSettings.from_dict(raw)


def test_bad_prompts_raise(model):
    s = DecodeSettings(gen_length=8)
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[]], s)
    with pytest.raises(ValueError, match="mask token"):
        generate(model, [[1, MASK_ID, 2]], s)
    with pytest.raises(ValueError, match="out of range"):
        generate(model, [[1, 10_000]], s)
    with pytest.raises(ValueError, match="max_sequence_length"):
        generate(model, [[1, 2]], s.replace(gen_length=4096))


def test_strings_from_a_cli_are_parsed():
    s = DecodeSettings.from_dict({"gamma": "0.8", "window": "8", "block_caching": "false"})
    assert (s.gamma, s.window, s.block_caching) == (0.8, 8, False)


def test_core_imports_without_vllm():
    code = (
        "import sys; sys.modules['vllm'] = None\n"
        "import vllm_elastic.core.generate, vllm_elastic.core.checkpoint, vllm_elastic.eval.runner\n"
        "import vllm_elastic.bench.__main__ as b\n"
        "assert 'vllm' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_json_folder_is_made_and_a_bad_path_fails_before_any_run(tmp_path, capsys):
    from vllm_elastic.bench.__main__ import main

    args = ["--engine", "reference", "--methods", "elastic", "--gen-length", "16",
            "--num-prompts", "1", "--task", "arith"]  # fmt: skip
    out = tmp_path / "new" / "folder" / "bench.json"
    assert main([*args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["runs"][0]["method"] == "elastic"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit):  # argparse's error: exit status 2, no run started
        main([*args, "--json", str(blocker / "bench.json")])
    assert "--json" in capsys.readouterr().err
