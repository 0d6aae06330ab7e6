"""A sweep from YAML: the base pretraining config, the search space and the ablation.

A sweep file names a base pretraining config (a file, relative to the sweep file, and/or
inline keys), the keys to vary and how, and what to optimise::

    pretrain: pretrain-demo.yaml        # base PretrainConfig file (optional)
    overrides: {steps: 200}             # then these PretrainConfig keys
    search:                             # PretrainConfig key -> domain
      temperature: {grid: [0.1, 0.2, 0.5]}
      queue_size: {choice: [1024, 4096]}
      base_lr: {loguniform: [0.01, 0.3]}
      momentum: {uniform: [0.99, 0.999]}
      seed: {grid: [0, 1]}
    ablation:                           # augment.codes subsets, as a grid
      codes: [RR, JC, GN, GR, PS]
      subsets: [all, leave_one_out, only_one]   # and/or explicit `sets: [[RR, JC], ...]`
    metric: knn_sigma_mad               # mode inferred: *_acc, *_bacc maximised, others min
    scheduler: {type: asha, grace_period: 50, reduction_factor: 2}   # or {type: fifo}
    num_samples: 1                      # repeats of the grid (random domains redrawn)

Everything is checked before Ray starts: unknown keys and domains, empty or inverted
ranges, and every discrete combination (and each range's ends) must make a valid
PretrainConfig, so e.g. a queue size that is not a multiple of the global batch fails
here, naming the key and value, not hours later in trial 17.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..augment.config import parse_codes
from ..config import build, describe_fields, read_yaml_mapping, to_dict
from ..errors import ConfigError
from ..train.config import PretrainConfig

#: domain name -> whether its argument is a list of values (else a [low, high] range)
DOMAINS = {
    "grid": True,
    "choice": True,
    "uniform": False,
    "loguniform": False,
    "randint": False,
}
SUBSET_KINDS = ("all", "leave_one_out", "only_one", "none")
SCHEDULERS = ("asha", "fifo")
#: metrics Ray Train reports each evaluation (rank 0's kNN check) and at each log step
METRICS = ("knn_sigma_mad", "knn_eta", "knn_morph_acc", "knn_morph_bacc", "loss")
CODES_KEY = "augment.codes"
MAX_CHECKED_COMBINATIONS = 4096
SWEEP_KEYS = (
    "pretrain",
    "overrides",
    "search",
    "ablation",
    "metric",
    "mode",
    "scheduler",
    "num_samples",
    "max_concurrent_trials",
    "max_failures",
)


@dataclass(frozen=True)
class Domain:
    """How one key varies: `kind` in DOMAINS, `values` (lists) or (low, high) (ranges)."""

    key: str
    kind: str
    values: tuple

    def to_tune(self):
        """The ray.tune search-space object."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        low, high = self.values
        if self.kind == "randint":
            return tune.randint(int(low), int(high) + 1)  # inclusive of high, as written
        return getattr(tune, self.kind)(low, high)


@dataclass(frozen=True)
class Scheduler:
    """The trial scheduler: ASHA (cuts trials early at rungs of `grace_period` x
    `reduction_factor`^k steps) or FIFO (every trial runs to the end)."""

    type: str = "asha"
    grace_period: int = 100
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        if self.type not in SCHEDULERS:
            raise ConfigError(f"scheduler.type={self.type!r}: expected one of {SCHEDULERS}")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ConfigError("scheduler: grace_period must be >= 1, reduction_factor >= 2")


@dataclass(frozen=True)
class SweepConfig:
    """A parsed, validated sweep (see the module docstring for the file format)."""

    base: dict[str, Any]
    domains: tuple[Domain, ...]
    metric: str = "knn_sigma_mad"
    mode: str = "min"
    scheduler: Scheduler = field(default_factory=Scheduler)
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    max_failures: int = 1
    ablation_codes: tuple[str, ...] = ()

    @property
    def base_config(self) -> PretrainConfig:
        return build(PretrainConfig, self.base, "sweep base config")

    def param_space(self) -> dict[str, Any]:
        """The Tune param_space: dotted PretrainConfig key -> tune domain."""
        return {d.key: d.to_tune() for d in self.domains}

    def trial_config(self, params: dict[str, Any]) -> PretrainConfig:
        """The base config with one trial's values."""
        return build(PretrainConfig, {**self.base, **params}, f"trial {params}")

    def n_grid(self) -> int:
        """Trials in one pass of the grid (x num_samples = all trials)."""
        n = 1
        for d in self.domains:
            n *= len(d.values) if d.kind == "grid" else 1
        return n

    def to_dict(self) -> dict[str, Any]:
        """Plain data for sweep.yaml in the output directory (the resolved sweep)."""
        out = dataclasses.asdict(self)
        out["domains"] = {d.key: {d.kind: list(d.values)} for d in self.domains}
        out["scheduler"] = dataclasses.asdict(self.scheduler)
        out["ablation_codes"] = list(self.ablation_codes)
        return out


def ablation_subsets(codes, kinds=("all", "leave_one_out", "only_one"), sets=()) -> list[str]:
    """Augmentation subsets as ``augment.codes`` values ("RR,JC,GN"; "none" for no codes).

    `kinds`: "all" (every code), "leave_one_out" (all but one, for each), "only_one" (each
    alone), "none" (centre crops only); `sets`: explicit subsets. Duplicates are dropped.
    """
    full = parse_codes(list(codes))
    if not full:
        raise ConfigError("ablation.codes: empty; list the codes to ablate, e.g. [RR, JC, GN]")
    subsets: list[tuple[str, ...]] = []
    for kind in kinds:
        if kind not in SUBSET_KINDS:
            raise ConfigError(f"ablation.subsets: {kind!r} unknown; known: {SUBSET_KINDS}")
        if kind == "all":
            subsets.append(full)
        elif kind == "leave_one_out":
            subsets += [tuple(c for c in full if c != left) for left in full]
        elif kind == "only_one":
            subsets += [(c,) for c in full]
        else:
            subsets.append(())
    subsets += [parse_codes(list(s) if not isinstance(s, str) else s) for s in sets]
    unique = list(dict.fromkeys(subsets))
    if not unique:
        raise ConfigError(
            "ablation: subsets and sets are empty, so the sweep has no trials; give e.g. "
            "subsets: [all, leave_one_out]"
        )
    return [",".join(s) if s else "none" for s in unique]


def subset_label(codes: str, full: tuple[str, ...]) -> str:
    """A name for an ablation subset relative to the full set: "all", "no RR", "RR only"."""
    have = parse_codes(codes)
    if have == full:
        return "all"
    if not have:
        return "none"
    if len(have) == 1:
        return f"{have[0]} only"
    missing = [c for c in full if c not in have]
    if len(missing) == 1 and set(have) <= set(full):
        return f"no {missing[0]}"
    return "+".join(have)


def load_sweep(path: str | Path | None, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Parse and validate a sweep file; `overrides` are extra base PretrainConfig keys."""
    if path is None:
        return parse_sweep({}, "sweep", Path.cwd(), overrides)
    raw = read_yaml_mapping(path, "sweep")
    return parse_sweep(raw, str(path), Path(path).parent, overrides)


def parse_sweep(
    raw: dict[str, Any],
    where: str = "sweep",
    relative_to: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> SweepConfig:
    """A SweepConfig from the mapping of a sweep file (see the module docstring)."""
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {list(SWEEP_KEYS)}")
    base = _base_values(raw, where, relative_to or Path.cwd())
    known = {key for key, _, _ in describe_fields(PretrainConfig)}
    typos = sorted(set(overrides or {}) - known)
    if typos:  # named as the command line's, not the sweep file's
        raise ConfigError(f"key=value: unknown key(s) {typos} of the base pretraining config")
    base.update(overrides or {})
    base_config = build(PretrainConfig, base, f"{where}: base pretraining config")
    search = raw.get("search") or {}
    if not isinstance(search, dict):
        raise ConfigError(f"{where}: search: expected a mapping of key: {{domain: values}}")
    domains = [_domain(key, spec, where) for key, spec in search.items()]
    ablation_codes: tuple[str, ...] = ()
    if raw.get("ablation"):
        if any(d.key == CODES_KEY for d in domains):
            raise ConfigError(f"{where}: give {CODES_KEY} under `search` or `ablation`, not both")
        ablation = raw["ablation"]
        if not isinstance(ablation, dict) or not set(ablation) <= {"codes", "subsets", "sets"}:
            raise ConfigError(f"{where}: ablation: expected a mapping of codes, subsets, sets")
        codes = ablation.get("codes", list(base_config.augment.codes))
        ablation_codes = parse_codes(codes)
        kinds = ablation.get("subsets", ["all", "leave_one_out", "only_one"])
        subsets = ablation_subsets(ablation_codes, kinds, ablation.get("sets") or ())
        domains.append(Domain(CODES_KEY, "grid", tuple(subsets)))
    metric = str(raw.get("metric", "knn_sigma_mad"))
    if metric not in METRICS:
        raise ConfigError(f"{where}: metric {metric!r} unknown; reported: {METRICS}")
    mode = str(raw.get("mode", "max" if metric.endswith(("_acc", "_bacc")) else "min"))
    if mode not in ("min", "max"):
        raise ConfigError(f"{where}: mode {mode!r}: expected min or max")
    sched = raw.get("scheduler") or {}
    if not isinstance(sched, dict):
        raise ConfigError(f"{where}: scheduler: expected a mapping such as {{type: asha}}")
    sweep = SweepConfig(
        base=to_dict(base_config),
        domains=tuple(domains),
        metric=metric,
        mode=mode,
        scheduler=build(Scheduler, sched, f"{where}: scheduler"),
        num_samples=_positive(raw, "num_samples", 1, where),
        max_concurrent_trials=_positive(raw, "max_concurrent_trials", None, where),
        max_failures=_positive(raw, "max_failures", 1, where, minimum=0),
        ablation_codes=ablation_codes,
    )
    check_trials(sweep, where)
    return sweep


def check_trials(sweep: SweepConfig, where: str = "sweep") -> None:
    """Every combination of discrete values (and each range's ends) is a valid config."""
    probes = [[(d.key, v) for v in _probed(d)] for d in sweep.domains]
    total = 1
    for p in probes:
        total *= len(p)
    if total > MAX_CHECKED_COMBINATIONS:  # too many to build: check each value alone
        combos = ([kv] for p in probes for kv in p)
    else:
        combos = itertools.product(*probes)
    for combo in combos:
        params = dict(combo)
        try:
            sweep.trial_config(params)
        except ConfigError as e:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(
                f"{where}: search space gives an invalid trial ({shown}): {e}"
            ) from None


def _probed(domain: Domain) -> tuple:
    """The values of `domain` that check_trials builds: a list's every value, a range's
    ends, and for randint also low + 1 (a rule such as queue_size's multiple of the batch
    holds at both ends of [256, 1024] and fails in between)."""
    low_high = domain.values
    if domain.kind == "randint" and low_high[1] - low_high[0] > 1:
        return (*low_high, low_high[0] + 1)
    return low_high


def _base_values(raw: dict, where: str, relative_to: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if raw.get("pretrain") is not None:
        path = Path(raw["pretrain"])
        values.update(read_yaml_mapping(path if path.is_absolute() else relative_to / path))
    extra = raw.get("overrides") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{where}: overrides: expected a mapping of PretrainConfig keys")
    values.update(extra)
    return values


def _domain(key: str, spec: Any, where: str) -> Domain:
    name = f"{where}: search.{key}"
    head = key.split(".")[0]
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    if head not in fields:
        raise ConfigError(f"{name}: not a PretrainConfig key; known: {sorted(fields)}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(
            f"{name}: expected one domain such as {{grid: [0.1, 0.2]}}; "
            f"domains: {', '.join(DOMAINS)}"
        )
    ((kind, arg),) = spec.items()
    if kind not in DOMAINS:
        raise ConfigError(f"{name}: domain {kind!r} unknown; known: {', '.join(DOMAINS)}")
    if not isinstance(arg, list) or not arg:
        raise ConfigError(f"{name}: {kind} needs a non-empty list, got {arg!r}")
    if key == CODES_KEY:  # lists of codes become "RR,JC" strings: readable names, one value
        arg = [",".join(parse_codes(v)) or "none" for v in arg]
    if DOMAINS[kind]:
        return Domain(key, kind, tuple(arg))
    if len(arg) != 2 or not all(isinstance(v, (int, float)) for v in arg):
        raise ConfigError(f"{name}: {kind} needs [low, high] numbers, got {arg!r}")
    low, high = arg
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{name}: {kind} needs finite ends, got {arg!r}")
    if kind != "randint" and _field_type(key) is int:
        raise ConfigError(f"{name}: {key} is an integer; {kind} draws fractions: use randint")
    if not low < high:
        raise ConfigError(f"{name}: {kind} range [{low}, {high}] is empty (low >= high)")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{name}: loguniform needs low > 0, got {low}")
    return Domain(key, kind, (low, high))


def _field_type(key: str) -> Any:
    """The declared type of a PretrainConfig key, dotted into nested configs; None if the
    key names no field (check_trials then names it)."""
    cls: Any = PretrainConfig
    for part in key.split("."):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            return None
        cls = hints[part]
    return cls


def _positive(raw: dict, key: str, default, where: str, minimum: int = 1):
    value = raw.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where}: {key}={value!r}: expected an integer >= {minimum}")
    return value
