"""Fit a Bayesian CEN from the command line.

    python -m inference.svi --dataset retina
    python -m inference.svi --data annotations.csv --variant mixture --K 10 --out runs/mine
    python -m inference.svi --data assignments.tsv --format toloka    # or a batch CSV with --format mturk
    python -m inference.svi --resume runs/mine      # after Ctrl-C, SIGTERM or a crash

Holds out whole grids, fits by SVI (or MAP with ``--map``), prints held-out
accuracy / NLL / ECE, the fit's PSIS k-hat (and attribute retrieval and the
noisy-HIT flag's precision/recall when the data are simulated) and writes
the output files described in the README ("Fitting"), figures included, to ``--out``; the
Bayesian CEN also saves itself to ``OUT/model/`` (``CEN.save``), from which
``python -m inference.design --run OUT`` chooses the next grids to show.

Bad input (a malformed table, too few grids to hold one out, an unwritable
``--out``) stops with one line on stderr and exit status 1, never a
traceback. HITs with every image in one group or every image alone are kept
and counted (``n_one_group_hits``, ``n_all_singleton_hits``), and held-out HITs
by workers unseen in training (``n_test_hits_unseen_worker``) are reported:
the Bayesian CEN draws their worker activation from the population prior.
A Toloka or MTurk export (``--format``, ``cen_bayes.importers``) is read
into the same table; its rejected assignments and unassigned images are left
out and counted (``n_rejected_assignments``, ``n_unassigned_images``).

Runs are reproducible (same seed, data and device give the same files, bit
for bit: ``models.svi_trainer.deterministic``). The Bayesian fit saves its state
to ``OUT/checkpoint.pt`` every ``--checkpoint-every`` steps and when stopped
by Ctrl-C or SIGTERM; ``--resume OUT`` finishes it with the settings saved in
``OUT/run.json`` and gives the uninterrupted run's result. Output files are
written whole or not at all (``cen_bayes.atomic``). A fit whose ELBO turns
NaN stops with the step and a smaller learning rate to try.

Data-parallel across processes and machines: ``torchrun --nproc-per-node N
-m inference.svi ...`` (with torchrun's usual rendezvous flags for several
machines) runs one fit in N processes, each fitting its shard of the
training HITs, gradients all-reduced (``models.svi_trainer``; gloo on CPU,
nccl on CUDA, one GPU per process); rank 0 alone prints, checkpoints and
writes the outputs, and ``--resume`` continues every shard where it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as torch_distributed

from cen_bayes.annotations import AnnotationError
from cen_bayes.api import RUN_MODEL
from cen_bayes.atomic import atomic_path, write_csv, write_text
from cen_bayes.crowd import CrowdData, odd_hit_counts
from cen_bayes.datasets import DATASETS, load_dataset
from cen_bayes.importers import FORMATS, load_table
from cen_bayes.splits import split_by_grid, unseen_worker_hits
from inference.arviz_export import LOO_HITS, PREDICTIVE_HITS, inference_data, write_netcdf
from cen_bayes.datasets import true_hits
from inference.evaluate import Scored, evaluate_method, fit_and_evaluate
from models.svi_trainer import FitDiverged, deterministic, process_group, shared
from inference.select import AUTO, K_CANDIDATES, VARIANT_CANDIDATES
from inference.tables import embedding_table, hit_table
from inference.report import write_report
from models.cen import VARIANTS
from inference.methods import METHODS, OracleError, make_method


PARQUET_ABOVE = 1_000_000  # held-out pairs above which heldout_pairs is written as Parquet, not CSV


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _k(text: str) -> int | str:
    return AUTO if text == AUTO else _positive_int(text)


def _psis_draws(text: str) -> int:
    value = int(text)
    if value != 0 and value < 25:  # fewer leave no Pareto tail to fit (inference.diagnostics.pareto_khat)
        raise argparse.ArgumentTypeError(f"must be 0 (skip) or at least 25, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inference.svi", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=sorted(DATASETS), help="a built-in simulated dataset (default retina)")
    source.add_argument("--data", help="your annotation table: CSV or Parquet with worker_id, grid_id, image_id, "
                                       "group (or a crowd-platform export, see --format)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="what --data is: table (default), toloka (assignment export, TSV) or mturk (batch "
                             "results CSV); see cen_bayes/importers.py for the columns read")
    parser.add_argument("--method", choices=METHODS, default="cen",
                        help="cen: the Bayesian CEN (default); the others are the baselines (inference/methods.py)")
    parser.add_argument("--variant", choices=(AUTO, *VARIANTS), default=AUTO,
                        help="Bayesian CEN variant (--method cen); auto (default): the best of "
                             f"{', '.join(VARIANT_CANDIDATES)} on validation grids (inference/select.py)")
    parser.add_argument("--K", type=_k, default=AUTO,
                        help="embedding / attribute dimensions; auto (default): the best of "
                             f"{', '.join(map(str, K_CANDIDATES))} on validation grids (the baselines: 10)")
    parser.add_argument("--map", action="store_true", help="MAP point estimate (mixture/worker/context: the paper's loss)")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help="optimiser steps (default: 500 SVI, 200 MAP)")
    parser.add_argument("--lr", type=float, default=None, help="Adam step size (default: 0.3 kind, choice and MAP; 0.1 other SVI)")
    parser.add_argument("--batch-hits", type=_positive_int, default=None, help="HITs per minibatch (default: all up to 500,000 training pairs; above, enough "
                             "to show each image about 10 times: inference/fit.py)")
    parser.add_argument("--draws", type=_positive_int, default=100, help="posterior draws for predictions")
    parser.add_argument("--psis-draws", type=_psis_draws, default=200,
                        help="guide draws for the PSIS k-hat diagnostic (0 skips it, else at least 25)")
    parser.add_argument("--loo-hits", type=_non_negative_int, default=LOO_HITS, metavar="N",
                        help=f"training HITs whose log-likelihood posterior.nc keeps for az.loo (default {LOO_HITS}; "
                             "a seeded random subsample of larger crowds; 0 leaves it out)")
    parser.add_argument("--predictive-hits", type=_non_negative_int, default=PREDICTIVE_HITS, metavar="N",
                        help="held-out HITs whose pairs' posterior predictive draws posterior.nc keeps (default "
                             f"{PREDICTIVE_HITS}; a seeded random subsample of larger crowds; 0 leaves them out); "
                             "heldout_pairs has every pair's predictive mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout-frac", type=_fraction, default=0.15,
                        help="share of grids held out whole and scored, in [0, 1); 0 fits every grid")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", help="output folder (default runs/<dataset>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the fit in RUN_DIR (stopped by Ctrl-C, SIGTERM or a crash) with the settings "
                             "it was started with; the result is the uninterrupted run's")
    parser.add_argument("--checkpoint-every", type=_positive_int, default=100, metavar="N",
                        help="save the fit's state to OUT/checkpoint.pt every N steps (and on Ctrl-C / SIGTERM)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures (inference.report)")
    args = parser.parse_args(argv)
    if args.format != "table" and not args.data and not args.resume:
        parser.error(f"--format {args.format} reads a --data file")
    if args.map and AUTO in (args.variant, args.K):
        parser.error("--map fits one given variant and K: give --variant and --K (e.g. --variant mixture --K 10)")
    return resumed_args(parser, args) if args.resume else args


# options that may differ on resume: they change what is shown, not what is fitted
_DISPLAY_OPTIONS = ("resume", "no_progress", "no_figures")


def resumed_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The settings saved in RUN_DIR/run.json when the run started, with this call's display options.

    Fit options given beside ``--resume`` are refused rather than ignored or
    mixed in: a resumed fit with other settings would be neither run.
    """
    run_dir = Path(args.resume)
    saved = run_dir / "run.json"
    if not saved.is_file():
        parser.error(f"--resume {run_dir}: not a run folder of python -m inference.svi (no run.json in it)")
    defaults = vars(parser.parse_args([]))
    extra = [f"--{name.replace('_', '-')}" for name, value in vars(args).items()
             if name not in _DISPLAY_OPTIONS and value != defaults[name]]
    if extra:
        parser.error(f"--resume takes the fit's settings from {saved}; drop {', '.join(extra)}")
    settings = {**defaults, **json.loads(saved.read_text()),  # an option newer than the run: its default
                **{name: getattr(args, name) for name in _DISPLAY_OPTIONS}}
    return argparse.Namespace(**{**settings, "out": str(run_dir)})


def load(args):
    """(CrowdData, simulation or None, name, rows left out on import) from --data or --dataset."""
    if args.data:
        imported = load_table(args.data, args.format)
        return CrowdData.from_table(imported.table), None, Path(args.data).stem, imported.dropped
    name = args.dataset or "retina"
    sim = load_dataset(name, seed=args.seed)
    return CrowdData.from_source(sim.table, name=f"simulated {name}"), sim, name, {}


def run(args) -> dict:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    torch.manual_seed(args.seed)
    lead = process_group()[0] == 0  # under torchrun every rank fits; rank 0 alone prints and writes
    say = print if lead else (lambda *_, **__: None)
    data, sim, name, dropped = load(args)
    method = None if args.method == "cen" else make_method(  # first: an oracle without truth stops here
        args.method, data, sim, K=10 if args.K == AUTO else args.K, seed=args.seed, device=args.device,
        progress=not args.no_progress and lead)
    split = split_by_grid(data, args.holdout_frac, seed=args.seed)
    if args.holdout_frac > 0 and not split.test_hits.any():  # asked for a hold-out that cannot be made
        raise SystemExit(f"error: {args.data or name}: no held-out grid to score ({data.n_grids} grid(s), "
                         f"--holdout-frac {args.holdout_frac}); holding out whole grids needs at least 2 grids "
                         "(--holdout-frac 0 fits every grid and scores none)")
    out = shared(Path(args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"))  # rank 0's name
    if lead:
        out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        say(f"resuming {out} " + ("from its checkpoint" if (out / "checkpoint.pt").exists()
                                  else "from the start (it stopped before its first checkpoint)"))
    elif lead:  # what --resume needs to repeat the same fit
        write_text(out / "run.json", json.dumps({**vars(args), "out": str(out.resolve()),
                                                  "data": args.data and str(Path(args.data).resolve())}, indent=2))
    n_train = int(split.pair_masks(data)[0].sum())
    say(f"{name}: {data.n_images} images, {data.n_workers} workers, {data.n_grids} grids, {data.n_hits} HITs, "
        f"{len(data.pairs):,} pairs ({n_train:,} for training)")
    odd = odd_hit_counts(data)
    if odd["n_one_group_hits"] or odd["n_all_singleton_hits"]:
        say(f"kept as crowd noise: {odd['n_one_group_hits']} HITs with every image in one group, "
            f"{odd['n_all_singleton_hits']} with every image alone")
    if dropped:
        say(f"left out on import: {left_out(dropped)}")
    unseen = int(unseen_worker_hits(data, split).sum())
    if unseen:
        say(f"{unseen} held-out HITs are by workers unseen in training: " + unseen_worker_note(args.method))
    if args.method == "cen":
        result = fit_and_evaluate(data, split, sim, variant=args.variant, K=args.K, map_mode=args.map,
                                  steps=args.steps, lr=args.lr, batch_hits=args.batch_hits, draws=args.draws,
                                  seed=args.seed, device=args.device, progress=not args.no_progress and lead,
                                  checkpoint=out / "checkpoint.pt", resume=bool(args.resume),
                                  checkpoint_every=args.checkpoint_every, psis_draws=args.psis_draws)
        if result is None and not lead:  # the fit was this rank's part; rank 0 scores and writes
            return {}
        if result is None:  # stopped by Ctrl-C or SIGTERM; the checkpoint is kept
            say(f"resume with: python -m inference.svi --resume {out}", file=sys.stderr)
            sys.exit(130)
        if lead:
            write_netcdf(inference_data(result.model, result.draws, data, split.train_hits, result.test_pairs,
                                        lambda pairs: result.cen.predict_proba_draws(data, pairs),
                                        result.p_attr_draws, seed=args.seed, loo_hits=args.loo_hits,
                                        predictive_hits=args.predictive_hits, progress=not args.no_progress),
                         out / "posterior.nc")
            result.cen.save(out / RUN_MODEL)  # what python -m inference.design --run OUT reads
    else:
        result = evaluate_method(method, data, split, sim, seed=args.seed)
    metrics = {"dataset": name, **result.metrics, **odd, **dropped, "n_test_hits_unseen_worker": unseen}
    if not lead:
        return metrics
    write_outputs(out, data, sim, split, result, metrics)
    print_summary(metrics, out)
    if not args.no_figures:
        figures = write_report(out)
        print(f"figures: {', '.join(path.name for path in figures)}")
    return metrics


def left_out(dropped: dict) -> str:
    return (f"{dropped['n_rejected_assignments']} rejected assignments, "
            f"{dropped['n_unassigned_images']} unassigned images")


def unseen_worker_note(method: str) -> str:
    """How a method predicts for a worker it never saw (only the Bayesian CEN redraws it from its prior)."""
    if method == "cen":
        return "their worker activation is drawn from the population prior"
    if method in ("siamese", "triplet", "csn"):
        return f"{method} does not model workers, so it predicts for them as for anyone"
    return f"{method} has seen none of their HITs, so its predictions for them rest on untrained worker parameters"


def write_outputs(out: Path, data, sim, split, result: Scored, metrics) -> None:
    """hits.csv, heldout_pairs.csv (.parquet above ``PARQUET_ABOVE`` pairs), embeddings.csv, metrics.json;
    simulated data add the truth
    as ``true_*`` columns (HIT attribute and noise kind, image levels) for the figures.
    Attribute-blind methods have no p_attr columns, point estimates no sd columns."""
    test_pairs = result.test_pairs
    K = result.embedding.shape[1]
    hits = hit_table(data, split, result.p_attr, result.hit_uncertainty, K)
    truth = true_hits(sim, data)
    if truth is not None:
        hits = hits.assign(true_attribute=truth["attribute"], true_noise=truth["noise"])
    write_csv(hits, out / "hits.csv")
    pairs = pd.DataFrame({
        "worker_id": data.workers[test_pairs.worker.numpy()], "grid_id": data.grids[test_pairs.grid.numpy()],
        "image_i": data.images[test_pairs.i.numpy()], "image_j": data.images[test_pairs.j.numpy()],
        "label": test_pairs.label.numpy().astype(int), "p_same": result.p_same,
    })
    if len(pairs) > PARQUET_ABOVE:  # a campaign's held-out pairs: Parquet is a fraction of the CSV's size and time
        with atomic_path(out / "heldout_pairs.parquet") as partial:
            pairs.to_parquet(partial, index=False)
    else:
        write_csv(pairs, out / "heldout_pairs.csv")
    embedding = embedding_table(data.images, result.embedding, result.embedding_sd)
    if sim is not None:
        levels = sim.image_attributes.set_axis(sim.image_attributes.index.astype(str))[sim.attributes]
        for name, column in levels.reindex(np.asarray(data.images, dtype=str)).items():
            embedding[f"true_{name}"] = column.to_numpy()
    write_csv(embedding, out / "embeddings.csv")
    write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=float))



def print_summary(metrics: dict, out: Path) -> None:
    held = metrics["heldout"]
    rows = []
    if "selection" in metrics:
        candidates = ", ".join(f"{c['variant']} K {c['K']} {c['validation_nll']:.4f}" for c in metrics["selection"])
        rows.append(("model", f"{metrics['variant']}, K = {metrics['K']}, " + (
            f"chosen by validation NLL from {candidates}" if candidates else "no grid left to validate on")))
    if held is None:
        rows.append(("held-out scores", "none: every grid was fitted (--holdout-frac 0)"))
    else:
        rows += [("held-out accuracy", f"{held['accuracy']:.3f}  (majority {held['majority_accuracy']:.3f})"),
                 ("held-out NLL", f"{held['nll']:.3f}"), ("held-out ECE", f"{held['ece']:.3f}"),
                 ("held-out Brier", f"{held['brier']:.3f}")]
    parts = [(what, metrics.get(f"heldout_{part}", {}))
             for part, what in (("both_images_seen", "both images seen"), ("an_image_unseen", "an image unseen"))]
    if all(scores.get("n_pairs") for _, scores in parts):  # only when some held-out image was never trained on
        rows += [(f"  {what}", f"{scores['n_pairs']:,} pairs: accuracy {scores['accuracy']:.3f}, "
                               f"NLL {scores['nll']:.3f}, ECE {scores['ece']:.3f}") for what, scores in parts]
    if "attribute_retrieval" in metrics:
        ret = metrics["attribute_retrieval"]
        per = ", ".join(f"{k} {v:.2f}" for k, v in ret["per_attribute_accuracy"].items())
        rows.append(("attribute retrieval", f"{ret['mean_accuracy']:.3f}  ({per})"))
    if "noisy_hits" in metrics:
        noisy = metrics["noisy_hits"]
        rows.append(("uncertain HITs", f"{metrics['uncertain_share']:.1%} flagged; simulated noisy HITs: "
                                       f"precision {noisy['precision']:.2f}, recall {noisy['recall']:.2f}"))
    elif "uncertain_share" in metrics:
        rows.append(("uncertain HITs", f"{metrics['uncertain_share']:.1%} flagged"))
    if "clustering" in metrics:
        clu = metrics["clustering"]
        rows.append(("clustering MCC", f"K-means {clu['kmeans']['mcc']:.3f}, DP mixture {clu['dpgmm']['mcc']:.3f} "
                                       f"({clu['n_classes']} true classes)"))
    diagnostics = metrics.get("diagnostics", {})
    if diagnostics.get("psis_khat") is not None:
        rows.append(("PSIS k-hat", f"{diagnostics['psis_khat']:.2f}"))
    if "n_one_group_hits" in metrics:
        rows.append(("odd HITs (kept)", f"{metrics['n_one_group_hits']} every image in one group, "
                                        f"{metrics['n_all_singleton_hits']} every image alone"))
    if "n_rejected_assignments" in metrics:
        rows.append(("left out on import", left_out(metrics)))
    if metrics.get("n_test_hits_unseen_worker"):
        rows.append(("unseen workers", f"{metrics['n_test_hits_unseen_worker']} held-out HITs"))
    rows.append(("fit seconds", f"{metrics['fit_seconds']:.1f}" + (
        f"  (+ {metrics['selection_seconds']:.1f} choosing the variant and K)" if "selection" in metrics else "")))
    width = max(len(r[0]) for r in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if diagnostics.get("warning"):
        print(f"\n  warning: {diagnostics['warning']}")
    files = ", ".join(sorted([path.name for path in out.iterdir() if path.suffix in (".csv", ".json", ".nc")]
                             + ([f"{RUN_MODEL}/"] if (out / RUN_MODEL).is_dir() else [])))
    print(f"\nwrote {out}/ ({files})")


def start_process_group(args) -> None:
    """Join the process group ``torchrun`` set up (its WORLD_SIZE, RANK, MASTER_ADDR, ... variables):
    gloo on CPU, nccl on CUDA with one GPU per local rank."""
    cuda = args.device.startswith("cuda")
    if cuda:
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(args.device)
    torch_distributed.init_process_group("nccl" if cuda else "gloo")


def main(argv=None) -> None:
    args = parse_args(argv)
    parallel = int(os.environ.get("WORLD_SIZE", "1")) > 1  # started by torchrun with several processes
    if parallel:
        start_process_group(args)
    try:
        with deterministic():  # every method, not only the Bayesian fit: same seed, same numbers
            run(args)
    except (AnnotationError, OracleError, FitDiverged) as err:
        raise SystemExit(f"error: {err}") from None
    except OSError as err:  # an unreadable or unwritable path, a full disk: the user's to fix, in one line
        raise SystemExit(f"error: {' '.join(str(err).split())}") from None
    finally:
        if parallel:
            torch_distributed.destroy_process_group()


if __name__ == "__main__":
    main()
