"""Study specs, presets, server caps and samplers: fast, no Ray, no database."""

from __future__ import annotations

import itertools
import json

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from pydantic import ValidationError

from studies import bracket
from studies.caps import check_caps
from studies.presets import PRESET_DIR, load_preset, preset_names
from studies.samplers import distributions, make_sampler
from studies.spec import BRACKET_MIN_SEEDS, MAX_SEEDS, SEARCHABLE, Range, StudySpec, load_spec
from tests.optimizer_infos import OPTIMIZERS
from worker.config import TrialConfig
from worker.contract import DEFAULT_SEED_BATCH, Components, mask_seed
from worker.models import model_names
from worker.settings import Caps, Settings

#: preset -> (configurations, seeds), at most that many configurations for the bracket
#: presets: arms x (initial_points + max_extensions) (+ arms with a confirmation stage);
#: every preset must be listed here
PRESETS = {
    "paper-table1": (60, 2),  # 5 bases x 2 variants = 10 arms x (3 + 2) LRs + 10
    "sensitivity-p-tau": (12, 3),  # 3 p x 4 tau, 3 seeds: Figure A1's claim is paired
    "lr-window": (40, 3),  # 2 bases x 2 variants = 4 arms x (7 + 3) LRs, paired per seed
    "components": (48, 2),  # 2 variants x 4 components = 8 arms x (3 + 2) LRs + 8
    "granularity": (48, 2),  # 2 variants x 4 granularities = 8 arms x (3 + 2) LRs + 8
    "quadratic": (16, 3),  # 2 variants x (3 + 4) LRs + 2
    "heavy-tailed": (14, 3),  # 2 variants x (3 + 3) LRs + 2
    # 2 variants x 12 open-choice combinations = 24 grid points x (3 + 2) LRs + 24
    "implementations": (144, 2),
    "demo": (4, 1),  # 2 variants x 2 LRs
}
#: the presets that compare arms, each arm's LR tuned by the bracket protocol: their arms
BRACKET_ARMS = {
    "paper-table1": 10,
    "lr-window": 4,
    "components": 8,
    "granularity": 8,
    "quadratic": 2,
    "heavy-tailed": 2,
    "implementations": 24,
}
#: every base, as tests/optimizer_infos.py lists them
BASES = tuple(info.name for info in OPTIMIZERS)


def spec(**fields) -> StudySpec:
    """A small valid grid spec with ``fields`` replaced."""
    data = {
        "name": "t",
        "workload": {"model": "llama-nano", "steps": 20, "batch_size": 4, "seq_len": 64},
        "search": {"variant": ["dense", "magma"], "lr": [1e-3, 1e-2]},
        "sampler": "grid",
        **fields,
    }
    return StudySpec.model_validate(data)


def error_text(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


# --- presets ---------------------------------------------------------------------------


def test_every_preset_is_listed():
    assert set(preset_names()) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_loads_with_expected_size(name):
    configurations, seeds = PRESETS[name]
    s = load_preset(name)
    assert s.name == name
    assert s.sampler == "grid"
    assert s.configurations == configurations
    assert s.grid_size == len(s.grid_points()) == BRACKET_ARMS.get(name, configurations)
    assert s.bracket == (name in BRACKET_ARMS)
    assert s.seeds == seeds
    # a bracket study chooses each arm's LR on at least 2 seeds
    assert not s.bracket or s.seeds >= BRACKET_MIN_SEEDS == 2
    assert s.description and s.paper_reference
    assert s.fixed.get("threads") == 1
    assert s.max_concurrent == 2
    check_caps(s, Caps())  # within the default server caps
    for point in s.grid_points():
        TrialConfig(**s.trial_config(point))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_file_is_its_own_spec(name):
    assert load_spec(PRESET_DIR / f"{name}.yaml") == load_preset(name)


def test_paper_table1_arms():
    s = load_preset("paper-table1")
    assert s.search["base"] == ["adamw", "c-adamw", "laprop", "rmsprop", "muon"]
    assert s.search["variant"] == ["dense", "magma"]
    # the LR is the protocol's: half-decades around 1e-3, covering Appendix B.1's 1e-4..1e-2
    assert "lr" not in s.search and s.protocol.kind == "bracket"
    reach = [bracket.lr_at(s.protocol, k) for k in (-2, -1, 0, 1, 2)]
    assert reach == [1e-4, 3.16228e-4, 1e-3, 3.16228e-3, 1e-2]
    config = TrialConfig(**s.trial_config(s.grid_points()[0]))
    assert (config.p, config.tau, config.components) == (0.5, 2.0, "attention+mlp")


def test_ablation_presets_use_rmsprop():
    for name in ("sensitivity-p-tau", "components", "granularity"):
        s = load_preset(name)
        assert {s.trial_config(p)["base"] for p in s.grid_points()} == {"rmsprop"}, name
    s = load_preset("sensitivity-p-tau")
    assert s.search["p"] == [0.25, 0.5, 0.75]
    assert s.search["tau"] == [0.5, 1.0, 2.0, 4.0]


def test_components_preset_runs_table_a1_and_mlp_alone():
    """Table A1's attention, attention+mlp and all, and MLP alone (Appendix C.1's text
    compares attention with MLP): every components value there is, dense tuned once."""
    s = load_preset("components")
    assert s.search["components"] == ["attention", "mlp", "attention+mlp", "all"]
    assert set(s.search["components"]) == set(Components.values())
    arms = {TrialConfig(**s.trial_config(point)).run_key() for point in s.grid_points()}
    assert len(arms) == 1 + 4  # dense ignores components: 5 arms, at most 5 x 5 x 2 = 50 runs
    assert "5 arms, at most 5 x 5 x 2 seeds = 50 runs" in s.description


def test_implementations_preset_runs_every_open_choice_combination_with_weight_decay():
    """Algorithm 1 as we read it, each choice flipped alone and each public combination are
    all in the 12-point grid; dense ignores the masking fields, so it is tuned once; weight
    decay everywhere, or decay_on_skip could not matter; the heavy-tailed workload of the
    description is a valid study of the same arms."""
    s = load_preset("implementations")
    assert (s.search["score_init"], s.search["momentum"], s.search["decay_on_skip"]) == (
        ["first", 0.5, 1.0],
        ["updated", "previous"],
        [False, True],
    )
    configs = [TrialConfig(**s.trial_config(point)) for point in s.grid_points()]
    assert {c.weight_decay for c in configs} == {0.1} and {c.base for c in configs} == {"adamw"}
    assert len({c.run_key() for c in configs}) == 1 + 12
    assert "at most 13 x 5 x 2 + 13 x 6 = 208" in s.description
    sequential = s.protocol.sequential
    assert sequential is not None and (sequential.round_seeds, sequential.max_seeds) == (3, 6)
    start = s.description.index('{"workload": {"kind": "linear-transformer"')
    overrides, _ = json.JSONDecoder().raw_decode(s.description[start:])
    heavy = load_preset("implementations", overrides)
    assert (heavy.workload.kind, heavy.workload.covariates, heavy.metric) == (
        "linear-transformer",
        "heavy",
        "val_loss",
    )
    assert len({TrialConfig(**heavy.trial_config(p)).run_key() for p in heavy.grid_points()}) == 13
    check_caps(heavy, Caps())


def test_sensitivity_preset_runs_figure_a1s_grid_on_3_seeds():
    s = load_preset("sensitivity-p-tau")
    assert (s.search["p"], s.search["tau"]) == ([0.25, 0.5, 0.75], [0.5, 1.0, 2.0, 4.0])
    assert (s.seeds, s.runs) == (3, 36)
    assert "12 configurations x 3 seeds = 36 runs" in s.description


def test_synthetic_presets():
    quadratic = load_preset("quadratic")
    assert quadratic.workload.kind == "quadratic"
    assert quadratic.workload.hessian == "heterogeneous"
    homogeneous = load_preset("quadratic", {"workload": {"hessian": "homogeneous"}})
    assert homogeneous.workload.hessian == "homogeneous"
    assert homogeneous.workload.steps == quadratic.workload.steps

    heavy = load_preset("heavy-tailed")
    assert heavy.workload.kind == "linear-transformer"
    assert heavy.workload.covariates == "heavy"
    assert heavy.workload.condition_number
    light = load_preset("heavy-tailed", {"workload": {"covariates": "light"}})
    assert light.trial_config(light.grid_points()[0])["covariates"] == "light"


def test_demo_is_small():
    s = load_preset("demo")
    assert s.workload.model == "llama-bytes"  # the CPU-scale default, byte vocabulary
    assert s.configurations * s.seeds == 4
    assert s.early_stopping.kind == "none"
    assert s.workload.steps <= 300


def test_cpu_llama_presets_default_to_the_byte_model():
    """At the CPU scale the T5 embedding and head would hold ~95% of the parameters; the
    byte model leaves most of them to the attention and MLP weights that Magma masks."""
    llama = [n for n in PRESETS if load_preset(n).workload.kind == "llama-c4"]
    assert len(llama) == 7
    for name in llama:
        s = load_preset(name)
        assert s.workload.model == "llama-bytes", name
        assert TrialConfig(**s.trial_config(s.grid_points()[0])).tokenizer == "bytes", name


def test_load_preset_merges_nested_overrides():
    s = load_preset(
        "paper-table1",
        {
            "workload": {"model": "llama-60m", "steps": 10000, "batch_size": 512},
            "search": {"lr": [1e-3]},
            "seeds": 2,
            "protocol": {"kind": "none"},  # today's LR grid instead of bracketing
        },
    )
    assert (s.workload.model, s.workload.steps, s.workload.batch_size) == ("llama-60m", 10000, 512)
    assert s.workload.seq_len == 128  # untouched keys of a merged mapping stay
    assert s.workload.eval_tokens == 65536
    # the paper-scale model brings its own T5 tokenizer in place of the CPU default's bytes
    assert TrialConfig(**s.trial_config(s.grid_points()[0])).tokenizer is None
    assert s.search["base"] == ["adamw", "c-adamw", "laprop", "rmsprop", "muon"]
    assert s.search["lr"] == [1e-3]  # a list is replaced, not merged
    assert s.configurations == 10
    assert s.seeds == 2
    assert s.fixed == {"threads": 1}


def bracket_spec(**fields) -> StudySpec:
    """``spec`` with the bracket protocol: the LR is the protocol's, not searched."""
    search = {"base": ["adamw", "rmsprop"], "variant": ["dense", "magma"], "p": 0.5}
    protocol = {"kind": "bracket", "initial_points": 3, "max_extensions": 2, "confirm_seeds": 2}
    return spec(**{"search": search, "seeds": 3, "protocol": protocol, **fields})


def test_bracket_protocol_counts_its_runs_as_an_upper_bound():
    s = bracket_spec()
    assert s.grid_size == 4  # arms: 2 bases x 2 variants
    assert s.grid_points()[0] == {"base": "adamw", "variant": "dense", "p": 0.5}
    # 4 arms x (3 + 2) LRs + 4 confirmations; runs 4 x (5 x 3 seeds) + 4 x 2 = 68
    assert (s.configurations, s.runs, s.first_round_runs) == (24, 68, 4 * (3 * 3 + 2))
    assert spec().protocol.kind == "none"  # off unless asked for
    distribution = distributions(s)["lr"]
    assert isinstance(distribution, FloatDistribution) and distribution.log
    # the grid reaches k = -1 - 2 .. 1 + 2 around 1e-3 in half decades
    assert (distribution.low, distribution.high) == (3.16228e-5, 3.16228e-2)


def test_bracket_caps_check_the_first_round_and_confirmation():
    check_caps(bracket_spec(), Caps(max_trials=44))  # 4 arms x (3 x 3 + 2) = 44
    with pytest.raises(ValueError, match="first round and confirmation need 44 runs") as excinfo:
        check_caps(bracket_spec(), Caps(max_trials=43))
    assert "cap of 43" in error_text(excinfo)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"search": {"variant": ["dense", "magma"], "lr": [1e-3, 1e-2]}}, "search.lr: protocol"),
        ({"fixed": {"lr": 1e-3}}, "fixed.lr: protocol 'bracket' searches the LR"),
        ({"search": {"variant": ["dense"], "p": {"low": 0.1, "high": 0.9}}}, "not ranges: ['p']"),
        ({"sampler": "tpe", "trials": 4}, "use sampler 'grid', no trials"),
        ({"early_stopping": {"kind": "asha"}}, "early_stopping: protocol 'bracket'"),
        ({"protocol": {"kind": "bracket", "lr_step_decades": 0}}, "lr_step_decades"),
        ({"protocol": {"kind": "bracket", "lr_start": 1e-3, "typo": 1}}, "typo"),
        (
            {"seeds": 1},
            "seeds: protocol 'bracket' chooses each arm's LR on at least 2 seeds: "
            "give 2 to 1000 (got 1)",
        ),
    ],
)
def test_bracket_protocol_validation_names_the_field(fields, message):
    with pytest.raises(ValidationError) as excinfo:
        bracket_spec(**fields)
    assert message in error_text(excinfo)


def test_load_preset_overrides_are_validated():
    with pytest.raises(ValidationError, match="seq_len"):
        load_preset("demo", {"workload": {"seq_len": 2}})


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="no-such-preset") as excinfo:
        load_preset("no-such-preset")
    for name in PRESETS:
        assert name in error_text(excinfo)


# --- validation messages ---------------------------------------------------------------


def test_bad_base_in_search_names_field_and_choices():
    with pytest.raises(ValidationError) as excinfo:
        spec(search={"base": ["adamw", "adamx"]})
    text = error_text(excinfo)
    assert "search.base" in text
    for base in BASES:
        assert f"'{base}'" in text


def test_bad_searched_number_names_field():
    with pytest.raises(ValidationError, match=r"search\.lr: .*greater than 0"):
        spec(search={"lr": [1e-3, -1.0]})


def test_unknown_search_key_lists_searchable():
    with pytest.raises(ValidationError) as excinfo:
        spec(search={"betas": [[0.9, 0.99]]})
    text = error_text(excinfo)
    assert "betas" in text
    assert str(list(SEARCHABLE)) in text


def test_range_for_categorical_is_rejected():
    with pytest.raises(ValidationError, match="base: is categorical; give a list"):
        spec(sampler="tpe", trials=4, search={"base": {"low": 0, "high": 1}})


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"lr": {"low": 1e-2, "high": 1e-3}}, "must be below high"),
        ({"lr": {"low": 0.0, "high": 1e-3, "log": True}}, "log range needs low > 0"),
        ({"lr": {"low": 1e-4, "high": 1e-2, "step": 2}}, "step"),
        ({"lr": []}, "lr: an empty list"),
    ],
)
def test_bad_ranges_and_lists(search, message):
    with pytest.raises(ValidationError, match=message):
        spec(sampler="random", trials=4, search=search)


def test_grid_rejects_ranges():
    with pytest.raises(ValidationError, match=r"sampler 'grid' needs lists.*\['lr'\]"):
        spec(search={"variant": ["dense"], "lr": {"low": 1e-4, "high": 1e-2, "log": True}})


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp", "qmc"])
def test_trials_required_unless_grid(sampler):
    with pytest.raises(ValidationError, match=f"trials: required for sampler '{sampler}'"):
        spec(sampler=sampler)


def test_grid_trials_must_match_grid_size():
    assert spec(trials=4).configurations == 4  # equal is allowed
    with pytest.raises(ValidationError, match="trials: a grid has exactly 4 points"):
        spec(trials=5)


def test_bad_workload_kind_lists_kinds():
    with pytest.raises(ValidationError) as excinfo:
        spec(workload={"kind": "mnist"})
    text = error_text(excinfo)
    assert "workload.kind" in text
    for kind in ("llama-c4", "quadratic", "linear-transformer"):
        assert kind in text


def test_unknown_top_level_field_is_forbidden():
    with pytest.raises(ValidationError, match=r"(?s)learning_rate.*Extra inputs are not permitted"):
        spec(learning_rate=1e-3)


def test_unknown_workload_field_is_forbidden():
    with pytest.raises(ValidationError, match=r"(?s)workload\.lr.*Extra inputs"):
        spec(workload={"lr": 1e-3})


@pytest.mark.parametrize("fixed", [{"lr": 0.1}, {"steps": 10}, {"workload": "quadratic"}])
def test_fixed_may_not_overlap_search_or_workload(fixed):
    name = next(iter(fixed))
    with pytest.raises(ValidationError, match=rf"fixed: \['{name}'\] are set by search/workload"):
        spec(fixed=fixed)


def test_bad_fixed_value_names_field():
    with pytest.raises(ValidationError, match=r"betas: .*both betas must be in \[0, 1\)"):
        spec(fixed={"betas": [2.0, 0.0]})
    with pytest.raises(ValidationError, match=r"(?s)grad_klip.*Extra inputs"):
        spec(fixed={"grad_klip": 1.0})


def test_bad_model_name_lists_models():
    with pytest.raises(ValidationError) as excinfo:
        spec(workload={"model": "gpt2"})
    text = error_text(excinfo)
    assert "model: " in text
    assert str(model_names()) in text


def test_bad_model_name_is_located_in_workload():
    with pytest.raises(ValidationError) as excinfo:
        spec(workload={"model": "gpt2"})
    assert "search." not in error_text(excinfo)
    assert "workload.model: " in error_text(excinfo)


@pytest.mark.parametrize("name", ["seed", "mask_seed"])
def test_fixed_seed_is_rejected(name):
    with pytest.raises(ValidationError, match=rf"fixed: \['{name}'\] come from base_seed"):
        spec(fixed={name: 12345})


def test_yaml_exponent_without_dot_is_a_number():
    s = StudySpec.model_validate(yaml.safe_load("name: t\nsampler: grid\nsearch: {lr: [1e-5]}"))
    assert s.search["lr"] == [1e-5]


# --- Algorithm 1's open choices ---------------------------------------------------------

#: score_init mixes its word and numbers; momentum and decay_on_skip are categorical
OPEN_CHOICES = {
    "score_init": ["first", 0.5, 1.0],
    "momentum": ["updated", "previous"],
    "decay_on_skip": [False, True],
}


def test_open_choices_are_searched_in_a_grid_and_stored_complete():
    s = spec(search={"variant": ["dense", "magma"], **OPEN_CHOICES}, fixed={"weight_decay": 0.1})
    assert s.grid_size == 2 * 3 * 2 * 2
    points = s.grid_points()
    assert points == [
        {"variant": v, "score_init": i, "momentum": m, "decay_on_skip": d}
        for v, i, m, d in itertools.product(["dense", "magma"], *OPEN_CHOICES.values())
    ]
    for point in points:
        stored = s.complete_trial_config(point)
        assert {name: stored[name] for name in OPEN_CHOICES} == {n: point[n] for n in OPEN_CHOICES}
    # a study that searches none of them still stores them, at their defaults
    stored = spec().complete_trial_config({"variant": "magma", "lr": 1e-3})
    assert (stored["score_init"], stored["momentum"], stored["decay_on_skip"]) == (
        "first",
        "updated",
        False,
    )


def test_score_init_in_yaml_keeps_its_word_and_reads_its_numbers():
    text = "name: t\nsampler: grid\nsearch: {score_init: [first, 0.5, 1e-1, 1]}"
    s = StudySpec.model_validate(yaml.safe_load(text))
    assert s.search["score_init"] == ["first", 0.5, 0.1, 1]
    assert [s.complete_trial_config(p)["score_init"] for p in s.grid_points()] == [
        "first",
        0.5,
        0.1,
        1.0,
    ]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_samplers_draw_the_open_choices(sampler):
    """Optuna gets score_init's mixed list as one categorical: every draw is a choice, and
    a range of numbers alone is a float distribution."""
    s = spec(sampler=sampler, trials=8, search=OPEN_CHOICES)
    searched = distributions(s)
    for name, values in OPEN_CHOICES.items():
        assert searched[name] == CategoricalDistribution(values)
    study = optuna.create_study(sampler=make_sampler(s))
    for index in range(8):
        trial = study.ask(searched)
        for name, values in OPEN_CHOICES.items():
            assert trial.params[name] in values
        TrialConfig(**s.trial_config(trial.params))
        study.tell(trial, float(index))
    ranged = spec(sampler="tpe", trials=4, search={"score_init": {"low": 0.0, "high": 1.0}})
    assert distributions(ranged)["score_init"] == FloatDistribution(0.0, 1.0)


@pytest.mark.parametrize(
    ("search", "fixed", "where", "message"),
    [
        ({"score_init": ["first", 1.5]}, {}, "search.score_init", "'first' or a number in [0"),
        ({"score_init": {"low": 0.5, "high": 2.0}}, {}, "search.score_init", "got 2.0"),
        ({"momentum": ["sideways"]}, {}, "search.momentum", "'updated' or 'previous'"),
        ({"decay_on_skip": ["maybe"]}, {}, "search.decay_on_skip", "valid boolean"),
        ({"variant": ["skipupdate"], "momentum": "previous"}, {}, "search.momentum", "skipupdate"),
        ({"momentum": ["previous"]}, {"variant": "skipupdate"}, "search.momentum", "skipupdate"),
        ({"score_init": [0.5]}, {"variant": "skipupdate"}, "search.score_init", "skipupdate"),
        (
            {"decay_on_skip": [True]},
            {"base": "rmsprop", "weight_decay": 0.1},
            "search.decay_on_skip",
            "base 'rmsprop' folds its weight_decay (0.1)",
        ),
        (
            {"base": ["adamw", "sgd"]},
            {"decay_on_skip": True, "weight_decay": 0.1},
            "fixed.decay_on_skip",
            "base 'sgd' folds its weight_decay (0.1)",
        ),
    ],
)
def test_a_bad_open_choice_names_its_field(search, fixed, where, message):
    with pytest.raises(ValidationError) as excinfo:
        spec(sampler="random", trials=4, search=search, fixed=fixed)
    assert f"{where}: " in error_text(excinfo) and message in error_text(excinfo)


@pytest.mark.parametrize(
    ("search", "fixed", "combination"),
    [
        # each value is valid alone; only the pairs are not
        (
            {"variant": ["skipupdate", "magma"], "momentum": ["updated", "previous"]},
            {},
            "variant='skipupdate', momentum='previous'",
        ),
        (
            {"variant": ["skipupdate", "magma"], "score_init": ["first", 0.5]},
            {},
            "variant='skipupdate', score_init=0.5",
        ),
        (
            {"base": ["adamw", "rmsprop"], "weight_decay": [0.0, 0.1], "decay_on_skip": [True]},
            {},
            "base='rmsprop', weight_decay=0.1, decay_on_skip=True",
        ),
    ],
)
def test_a_search_is_checked_on_every_combination_of_the_joint_fields(search, fixed, combination):
    """A search whose values are each valid, but not together, is refused when submitted,
    naming the combination, not by a trial that fails mid-study."""
    with pytest.raises(ValidationError) as excinfo:
        spec(search=search, fixed=fixed)
    assert f"the search combines {combination}" in error_text(excinfo)


def test_open_choices_combine_with_dense_and_decoupled_bases():
    """What is valid together passes: dense ignores the choices, and decay_on_skip goes
    with AdamW on both masked variants."""
    dense = spec(search={"variant": ["dense", "magma"], **OPEN_CHOICES})
    assert dense.grid_size == 24
    both = spec(
        search={"variant": ["skipupdate", "magma"], "decay_on_skip": [False, True]},
        fixed={"base": "adamw", "weight_decay": 0.1},
    )
    assert both.grid_size == 4


# --- trial configurations --------------------------------------------------------------


def test_trial_config_combines_workload_fixed_and_search():
    s = spec(
        workload={"kind": "quadratic", "hessian": "homogeneous", "steps": 40, "batch_size": 3},
        search={"base": "rmsprop", "variant": ["dense", "magma"], "lr": [1e-2, 1e-1]},
        fixed={"threads": 1, "warmup_fraction": 0.0},
        base_seed=100,
    )
    config = s.trial_config({"variant": "magma", "lr": 0.1}, seed_index=2)
    assert config["workload"] == "quadratic"
    assert "kind" not in config
    assert (config["hessian"], config["steps"], config["batch_size"]) == ("homogeneous", 40, 3)
    assert (config["threads"], config["warmup_fraction"]) == (1, 0.0)
    assert (config["base"], config["variant"], config["lr"]) == ("rmsprop", "magma", 0.1)
    assert config["seed"] == 102
    assert config["metric"] == "val_loss"
    stored = s.complete_trial_config({"variant": "magma", "lr": 0.1}, seed_index=2)
    assert stored == TrialConfig(**config).model_dump(mode="json")
    assert stored["mask_seed"] == mask_seed(102) != stored["seed"]


def test_seeds_are_shared_across_configurations():
    s = spec(base_seed=7, seeds=3)
    for index in range(3):
        configs = [s.complete_trial_config(point, index) for point in s.grid_points()]
        assert {c["seed"] for c in configs} == {7 + index}
        assert len({c["mask_seed"] for c in configs}) == 1
        assert configs[0]["mask_seed"] not in {7, 8, 9}
    seeds = {s.trial_config({}, index)["seed"] for index in range(3)}
    masks = {s.complete_trial_config({}, index)["mask_seed"] for index in range(3)}
    assert seeds == {7, 8, 9}
    assert len(masks) == 3
    assert not seeds & masks


def test_seed_batch_defaults_to_the_workloads_and_is_stored():
    """A stored spec names its seed batch, so a changed default never regroups a running
    study's seeds; 1 is one task per seed; hundreds of seeds are allowed."""
    llama, quadratic = spec(), spec(workload={"kind": "quadratic"}, search={"lr": [0.1]})
    assert llama.seed_batch == DEFAULT_SEED_BATCH["llama-c4"]
    assert quadratic.seed_batch == DEFAULT_SEED_BATCH["quadratic"]
    assert DEFAULT_SEED_BATCH["quadratic"] > DEFAULT_SEED_BATCH["llama-c4"]
    assert StudySpec.model_validate(llama.model_dump(mode="json")) == llama
    assert llama.model_dump(mode="json")["seed_batch"] == DEFAULT_SEED_BATCH["llama-c4"]
    assert spec(seed_batch=1, seeds=500).seed_batch == 1
    assert spec(seeds=MAX_SEEDS).seeds == MAX_SEEDS >= 1000


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"seed_batch": 0}, "seed_batch"),
        ({"seed_batch": -3}, "seed_batch"),
        ({"seeds": MAX_SEEDS + 1}, "seeds"),
    ],
)
def test_seed_batch_and_seeds_are_bounded(fields, field):
    with pytest.raises(ValidationError) as excinfo:
        spec(**fields)
    assert excinfo.value.errors()[0]["loc"] == (field,)


def test_grid_points_enumerate_the_product_in_order():
    s = spec(
        search={
            "base": ["adamw", "rmsprop"],
            "tau": 2.0,  # a scalar is fixed, a single point
            "variant": ["dense", "skipupdate", "magma"],
            "lr": [1e-3, 1e-2],
        }
    )
    points = s.grid_points()
    assert s.grid_size == len(points) == 12
    expected = [
        {"base": b, "tau": 2.0, "variant": v, "lr": lr}
        for b, v, lr in itertools.product(
            ["adamw", "rmsprop"], ["dense", "skipupdate", "magma"], [1e-3, 1e-2]
        )
    ]
    assert points == expected
    assert points[0] == {"base": "adamw", "tau": 2.0, "variant": "dense", "lr": 1e-3}
    assert points[-1] == {"base": "rmsprop", "tau": 2.0, "variant": "magma", "lr": 1e-2}


def test_no_search_is_one_configuration():
    s = spec(search={})
    assert s.grid_size == s.configurations == 1
    assert s.grid_points() == [{}]


def test_configurations_of_a_sampled_study_is_trials():
    s = spec(sampler="tpe", trials=17, search={"lr": {"low": 1e-4, "high": 1e-1, "log": True}})
    assert s.configurations == 17


# --- round trips -----------------------------------------------------------------------


def sampled_spec() -> StudySpec:
    return spec(
        sampler="tpe",
        trials=30,
        seeds=2,
        search={
            "base": ["adamw", "laprop"],
            "variant": "magma",
            "lr": {"low": 1e-5, "high": 1e-1, "log": True},
            "p": {"low": 0.25, "high": 0.75},
        },
        early_stopping={"kind": "asha", "grace_period": 2, "reduction_factor": 3},
        objective={"metric": "val_loss", "mode": "min"},
    )


@pytest.mark.parametrize("name", [*sorted(PRESETS), "sampled"])
def test_yaml_and_json_round_trip(name):
    s = sampled_spec() if name == "sampled" else load_preset(name)
    assert StudySpec.model_validate(yaml.safe_load(s.model_dump_json())) == s
    assert StudySpec.model_validate_json(s.model_dump_json()) == s
    assert StudySpec.model_validate(json.loads(s.model_dump_json())) == s
    assert StudySpec.model_validate(yaml.safe_load(yaml.safe_dump(s.model_dump(mode="json")))) == s


def test_round_trip_keeps_ranges():
    s = StudySpec.model_validate(yaml.safe_load(sampled_spec().model_dump_json()))
    assert s.search["lr"] == Range(low=1e-5, high=1e-1, log=True)
    assert isinstance(s.search["p"], Range)
    assert s.search["variant"] == "magma"


# --- server caps -----------------------------------------------------------------------


def test_caps_accept_a_spec_within_them():
    check_caps(spec(seeds=3), Caps(max_trials=12, max_steps=20, max_concurrent=2))


def test_caps_reject_too_many_runs():
    with pytest.raises(ValueError, match=r"trials: 4 configurations x 3 seeds = 12 runs .* 11"):
        check_caps(spec(seeds=3), Caps(max_trials=11))


def test_caps_count_sampled_trials():
    s = spec(sampler="random", trials=50, search={"lr": {"low": 1e-4, "high": 1e-2}})
    with pytest.raises(ValueError, match="^trials: 50 configurations"):
        check_caps(s, Caps(max_trials=49))


def test_caps_reject_too_many_steps():
    with pytest.raises(ValueError, match=r"^workload\.steps: 20 exceeds .* 19"):
        check_caps(spec(), Caps(max_steps=19))


def test_caps_reject_too_much_concurrency():
    with pytest.raises(ValueError, match=r"^max_concurrent: 8 exceeds .* 4"):
        check_caps(spec(max_concurrent=8), Caps(max_concurrent=4))


def test_caps_are_settings_from_the_environment(monkeypatch):
    for var in ("MAGMA_MAX_TRIALS", "MAGMA_MAX_STEPS", "MAGMA_MAX_CONCURRENT"):
        monkeypatch.delenv(var, raising=False)
    assert Settings().caps == Caps()
    monkeypatch.setenv("MAGMA_MAX_TRIALS", "10")
    monkeypatch.setenv("MAGMA_MAX_STEPS", "500")
    monkeypatch.setenv("MAGMA_MAX_CONCURRENT", "3")
    assert Settings().caps == Caps(max_trials=10, max_steps=500, max_concurrent=3)
    with pytest.raises(ValueError, match="max_concurrent: 4"):
        check_caps(spec(max_concurrent=4), Settings().caps)


# --- samplers --------------------------------------------------------------------------


def test_distributions():
    result = distributions(sampled_spec())
    assert set(result) == {"base", "lr", "p"}  # the scalar variant is not searched
    assert result["base"] == CategoricalDistribution(["adamw", "laprop"])
    assert result["lr"] == FloatDistribution(1e-5, 1e-1, log=True)
    assert result["p"] == FloatDistribution(0.25, 0.75, log=False)


def test_distributions_of_a_grid_are_categorical():
    s = load_preset("sensitivity-p-tau")
    result = distributions(s)
    assert set(result) == {"p", "tau"}
    assert result["p"] == CategoricalDistribution([0.25, 0.5, 0.75])
    assert all(isinstance(d, CategoricalDistribution) for d in result.values())


@pytest.mark.parametrize(
    ("sampler", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("gp", optuna.samplers.GPSampler),
        ("qmc", optuna.samplers.QMCSampler),
        ("grid", optuna.samplers.RandomSampler),  # grid points are enqueued, not sampled
    ],
)
def test_make_sampler(sampler, cls):
    if sampler == "grid":
        s = spec()
    else:
        s = spec(sampler=sampler, trials=5, search={"lr": {"low": 1e-4, "high": 1e-2}})
    assert type(make_sampler(s)) is cls


def _paper_scale_overrides(description: str) -> dict | None:
    """The JSON object of the description's paper-scale overrides (the one that sets a
    T5-vocabulary model), or None when the description gives none."""
    start = description.find('{"workload": {"model": "llama-')
    if start < 0:
        return None
    depth = 0
    for end, char in enumerate(description[start:], start):
        depth += (char == "{") - (char == "}")
        if depth == 0:
            return json.loads(description[start : end + 1])
    raise AssertionError(f"unbalanced braces in {description[start:]!r}")


@pytest.mark.parametrize("name", preset_names())
def test_paper_scale_overrides_are_valid_and_read_c4(name: str) -> None:
    """A description's paper-scale overrides, copied as they are, give a valid study that
    trains and evaluates on C4 (not the bundled sample) with a fixed 10M-token validation
    set, so a user who copies them runs the paper's data."""
    preset = load_preset(name)
    overrides = _paper_scale_overrides(preset.description)
    if preset.workload.kind != "llama-c4":
        assert overrides is None
        return
    assert overrides is not None, f"{name} gives no paper-scale overrides"
    spec = load_preset(name, overrides)
    config = spec.complete_trial_config({"lr": 1e-3})
    assert config["train_files"] == config["validation_files"] == ["hf:allenai/c4:en"]
    assert config["eval_tokens"] == 10_000_000
    assert config["model"] != "llama-bytes" and spec.resources.gpu == 1
