"""What secure aggregation (Flower SecAgg+) costs next to the same rounds in the clear.

Synthetic COVID-19 cohort, ``--sites`` hospitals x ``--rows`` admissions, in-process
engine: a sum, an exact federated logistic regression and ``--fedavg-rounds`` rounds of
FedAvg logistic regression, each once in the clear and once with
``secure=True``/``secure_aggregation=True``. Also checks that the secure results equal
the clear ones (max absolute difference). With ``--flower`` the sum is also timed over
a real SuperLink and SuperNodes on loopback (TLS).

Prints a table; with ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import table  # noqa: E402

from healthfed.compute.fedavg import FedAvgLogisticRegression  # noqa: E402
from healthfed.compute.glm import FederatedLogisticRegression  # noqa: E402
from healthfed.data.synth import write_covid_cohort  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import Node, write_node_file  # noqa: E402

FEATURES = ["age", "sex", "spo2", "crp", "diabetes", "vaccination"]


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--fedavg-rounds", type=int, default=10)
    parser.add_argument("--flower", action="store_true", help="also time the sum over Flower")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench-secagg-"))
    written = write_covid_cohort(root / "data", sites=args.sites, rows=args.rows, seed=0)
    descriptors = sorted(p for p in written if p.suffix == ".toml")
    files = [write_node_file(root / "nodes" / f"{d.stem}.toml", d.stem, [d]) for d in descriptors]
    rows: list[list[Any]] = []
    out: dict[str, Any] = {"sites": args.sites, "rows_per_site": args.rows}
    with Federation.inprocess([Node.from_toml(f) for f in files]) as fed:
        fed.run("sum", "covid", {"variable": "age"})  # warm the nodes' data caches
        clear, t_clear = _timed(lambda: fed.run("sum", "covid", {"variable": "age"}))
        secure, t_secure = _timed(lambda: fed.secure_sum("covid", "age"))
        diff = abs(secure.sum - clear.sum)
        rows.append(["sum of age (1 round)", t_clear, t_secure, t_secure / t_clear, diff])
        out.update(sum_clear_s=t_clear, sum_secure_s=t_secure, sum_abs_diff=diff)

        glm, t_glm = _timed(
            lambda: FederatedLogisticRegression().fit(fed, "covid", "death_28d", FEATURES)
        )
        sglm, t_sglm = _timed(
            lambda: FederatedLogisticRegression(secure_aggregation=True).fit(
                fed, "covid", "death_28d", preprocess=glm.preprocessor_
            )
        )
        d_glm = float(np.max(np.abs(sglm.params_ - glm.params_)))
        label = f"exact logistic regression ({glm.n_iter_} rounds)"
        rows.append([label, t_glm, t_sglm, t_sglm / t_glm, d_glm])
        out.update(glm_clear_s=t_glm, glm_secure_s=t_sglm, glm_max_abs_coef_diff=d_glm)

        spec = glm.preprocessor_.to_spec()
        kw = {"rounds": args.fedavg_rounds, "lr": 0.5, "random_state": 0}
        fa, t_fa = _timed(
            lambda: FedAvgLogisticRegression(**kw).fit(fed, "covid", "death_28d", preprocess=spec)
        )
        sfa, t_sfa = _timed(
            lambda: FedAvgLogisticRegression(secure_aggregation=True, **kw).fit(
                fed, "covid", "death_28d", preprocess=spec
            )
        )
        d_fa = max(
            float(np.max(np.abs(a - b))) for a, b in zip(fa.weights_, sfa.weights_, strict=True)
        )
        rows.append(
            [f"FedAvg logistic ({args.fedavg_rounds} rounds)", t_fa, t_sfa, t_sfa / t_fa, d_fa]
        )
        out.update(fedavg_clear_s=t_fa, fedavg_secure_s=t_sfa, fedavg_max_abs_weight_diff=d_fa)

    if args.flower:
        with Federation.flower(files, work_dir=root / "flower", timeout=120) as fed:
            fed.run("sum", "covid", {"variable": "age"})  # first run pays start-up costs
            fclear, tf_clear = _timed(lambda: fed.run("sum", "covid", {"variable": "age"}))
            fsecure, tf_secure = _timed(lambda: fed.secure_sum("covid", "age"))
        fdiff = abs(fsecure.sum - fclear.sum)
        rows.append(
            ["sum of age over Flower (TLS)", tf_clear, tf_secure, tf_secure / tf_clear, fdiff]
        )
        out.update(flower_sum_clear_s=tf_clear, flower_sum_secure_s=tf_secure)

    print(
        f"Secure aggregation (Flower SecAgg+) vs clear, {args.sites} sites x {args.rows} rows, "
        "in-process unless noted"
    )
    print(table(["what", "clear s", "SecAgg+ s", "ratio", "max |diff|"], rows))
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
