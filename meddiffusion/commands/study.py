"""``meddiff study``: blinded, randomised reader studies (create, status, unblind, analyze).

``create`` pairs the files of the originals' folder with those of each method's folder by
name (``a.nrrd`` with ``a.nii.gz``; a subfolder is a DICOM series): each original and its
method outputs form one case, one patient per file unless ``patients.csv`` (columns ``file``,
``patient`` and, for diagnostic questions, ``truth`` 0/1) says otherwise.  It writes the
blinded study folder the readers open in Slicer's ReaderStudy module and the key, kept apart
(default: ``<study>.key.json`` beside the folder).  ``status`` shows each reader's progress
and checks the logs; ``unblind`` and ``analyze`` open the key and are logged in the study's
``audit.jsonl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = """examples:
  meddiff study create --original ct/ --method denoised=denoised/ --readers R1,R2 --seed 7 -o ldct-study
  meddiff study create --original ct/ --method a=out_a/ --method b=out_b/ --questions likert:noise,pairwise:preference \\
      --readers R1,R2,R3 --sessions 2 --washout-days 14 --repeats 0.1 --training 2 -o study --key sealed/study.key.json
  meddiff study status ldct-study
  meddiff study unblind ldct-study --key ldct-study.key.json --reason "interim safety check" -o answers.csv
  meddiff study analyze ldct-study --key ldct-study.key.json -o report/"""

_DEFAULT_QUESTIONS = "likert:noise,likert:sharpness,likert:artefacts,pairwise:preference"
_EVENTS_HELP = "progress as a terminal bar (default), JSON lines on stdout, or nothing"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("study", help="blinded reader studies: create, status, unblind, analyze",
                              description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)
    create = actions.add_parser("create", help="build a blinded study and its key from folders of images")
    create.add_argument("--original", required=True, help="folder of the original images")
    create.add_argument("--method", action="append", default=[], metavar="NAME=DIR",
                        help="a method's outputs (same file names as the originals); repeat for several methods")
    create.add_argument("--questions", help="kind:criterion list, kinds likert, pairwise, diagnostic (default: "
                                            f"{_DEFAULT_QUESTIONS}; no pairwise without --method)")
    create.add_argument("--readers", required=True, help="reader ids, comma-separated (e.g. R1,R2)")
    create.add_argument("--seed", type=int, default=0, help="seed of the reading orders (default: 0)")
    create.add_argument("-o", "--output", required=True, help="study folder to create (new or empty)")
    create.add_argument("--key", help="where to write the key (default: <study>.key.json beside the folder)")
    create.add_argument("--patients", help="CSV file,patient[,truth] (default: <original>/patients.csv if present)")
    create.add_argument("--repeats", type=float, default=0.1, help="fraction of cases read twice (default: 0.1)")
    create.add_argument("--min-patient-gap", type=int, default=2,
                        help="other reads at least between two reads of one patient (default: 2)")
    create.add_argument("--sessions", type=int, default=1, help="reading sessions (default: 1)")
    create.add_argument("--washout-days", type=float, default=14.0,
                        help="days at least between a reader's sessions (default: 14)")
    create.add_argument("--training", type=int, default=0, help="cases read first for practice, not analysed")
    create.add_argument("--title", default="", help="study title shown to readers")
    create.add_argument("--allow-edits", action="store_true", help="let readers change an answer (with a reason)")
    create.add_argument("--compress", action="store_true",
                        help="gzip the images (smaller, but a method's file size may give it away)")
    create.add_argument("--window", type=float, help="fixed display window for every image (e.g. 400)")
    create.add_argument("--level", type=float, help="fixed display level for every image (e.g. 40)")
    status = actions.add_parser("status", help="each reader's progress and a check of the logs")
    unblind = actions.add_parser("unblind", help="open the key (logged with who, when and why)")
    analyze = actions.add_parser("analyze", help="statistics report of the answers (opens the key, logged)")
    for sub in (status, unblind, analyze):
        sub.add_argument("study", help="study folder")
    for sub in (unblind, analyze):
        sub.add_argument("--key", help="the study's key (default: <study>.key.json beside the folder)")
        sub.add_argument("--who", help="who opens the key (default: the login name)")
    unblind.add_argument("--reason", help="why the key is opened (required; kept in the audit log)")
    unblind.add_argument("-o", "--output", help="also write the unblinded answers here (.csv)")
    analyze.add_argument("--reason", default="statistical analysis", help="kept in the audit log")
    analyze.add_argument("-o", "--output", required=True, help="report folder (outside the study folder)")
    for sub in (create, status, unblind, analyze):
        sub.add_argument("--events", choices=("bar", "jsonl", "none"), default="bar", help=_EVENTS_HELP)


def run(args: argparse.Namespace, progress) -> dict:
    return {"create": _create, "status": _status, "unblind": _unblind, "analyze": _analyze}[args.action](args, progress)


def _create(args, progress) -> dict:
    from meddiffusion.commands.paths import check_distinct, check_writable
    from meddiffusion.study.blinding import create_study, default_key_path
    from meddiffusion.study.design import Design, default_question
    from meddiffusion.study.sources import find_cases

    methods = _methods(args.method)
    check_writable("-o", args.output)
    key = args.key or default_key_path(args.output)
    check_writable("--key", key)
    check_distinct({"--original": args.original, **{f"--method {n}": d for n, d in methods.items()}},
                   {"-o": args.output, "--key": key})
    questions = [default_question(*_kind_criterion(item)) for item in
                 (args.questions or _DEFAULT_QUESTIONS).split(",") if item.strip()]
    if not args.questions and not methods:
        questions = [q for q in questions if q.kind != "pairwise"]
    readers = [r.strip() for r in args.readers.split(",") if r.strip()]
    display = {k: v for k, v in (("window", args.window), ("level", args.level)) if v is not None}
    design = Design(title=args.title, seed=args.seed, questions=questions, readers=readers, cases=[],
                    sessions=args.sessions, washout_days=args.washout_days if args.sessions > 1 else 0.0,
                    repeats=args.repeats, min_patient_gap=args.min_patient_gap, allow_edits=args.allow_edits,
                    display=display)
    sources = find_cases(args.original, methods, args.patients, args.training, args.seed,
                         diagnostic=any(q.kind == "diagnostic" for q in questions))
    with progress.stage("blind", total=sum(len(s.images) for s in sources)) as step:
        design, key_path = create_study(sources, design, args.output, key, step=step,
                                             compress=args.compress)
    total = {reader: len(reads) for reader, reads in _schedule(args.output).items()}
    return {"study": str(args.output), "key": str(key_path), "cases": len(sources), "readers": readers,
            "reads": total, "summary": f"study {args.output}: {len(sources)} cases, {len(methods) + 1} images each, "
                                        f"{len(readers)} readers ({max(total.values())} reads each at most); key "
                                        f"{key_path} (keep it away from the readers)"}


def _status(args, progress) -> dict:
    from meddiffusion.study import log
    from meddiffusion.study.session import ReaderSession, Study

    study = Study.open(args.study)
    readers, lines = {}, []
    for reader in study.design.readers:
        session = ReaderSession(study, reader)
        done, total = session.progress()
        current = session.current()
        opens = current.available_from if current else None
        readers[reader] = {"done": done, "total": total, "problems": session.problems, "available_from": opens}
        state = "finished" if current is None else f"session {current.session}" + (f", opens {opens}" if opens else "")
        lines.append(f"{reader}: {done}/{total} reads ({state})" + "".join(f"\n  problem: {p}" for p in session.problems))
    audit = log.read(study.folder / "audit.jsonl")
    audit_problems = log.verify(study.folder / "audit.jsonl")
    lines.append(f"key opened {len(audit)} time(s)" + "".join(f"\n  audit problem: {p}" for p in audit_problems))
    return {"readers": readers, "unblinded": len(audit), "audit_problems": audit_problems, "summary": "\n".join(lines)}


def _unblind(args, progress) -> dict:
    from meddiffusion.commands.paths import check_output
    from meddiffusion.study.blinding import default_key_path, unblind

    if args.output:
        check_output("-o", args.output, "table")
        _outside_study("-o", args.output, args.study)
    key = unblind(args.study, args.key or default_key_path(args.study), args.reason, who=args.who)
    result = {"methods": key["methods"], "summary": "methods: " + ", ".join(f"{c} = {n}" for c, n in key["methods"].items())}
    if args.output:
        from meddiffusion.study.records import FIELDS, load_records

        records = load_records(args.study, args.key or default_key_path(args.study))
        _write_csv(args.output, FIELDS, records)
        result.update(answers=str(args.output), summary=result["summary"] + f"\n{len(records)} answers -> {args.output}")
    return result


def _analyze(args, progress) -> dict:
    from meddiffusion.commands.paths import check_writable
    from meddiffusion.study.blinding import default_key_path, unblind
    from meddiffusion.study.design import load_design
    from meddiffusion.study.records import load_records

    check_writable("-o", args.output)
    _outside_study("-o", args.output, args.study)
    try:
        from meddiffusion.study.analysis import analyze
    except ModuleNotFoundError as exc:
        if exc.name != "meddiffusion.study.analysis":
            raise
        raise ValueError("this meddiffusion has no study statistics (meddiffusion.study.analysis); update it") from None
    key = args.key or default_key_path(args.study)
    unblind(args.study, key, args.reason, who=args.who)
    with progress.stage("analyze", total=1) as step:
        result = analyze(load_records(args.study, key), load_design(args.study), Path(args.output))
        step()
    result.setdefault("summary", f"report -> {args.output}")
    return result


def _methods(items: list[str]) -> dict[str, str]:
    from meddiffusion.study.blinding import ORIGINAL

    methods: dict[str, str] = {}
    for item in items:
        name, _, folder = item.partition("=")
        name = name.strip()
        if not name or not folder:
            raise ValueError(f"--method takes NAME=DIR (e.g. denoised=out/), got '{item}'")
        if name == ORIGINAL or name in methods:
            raise ValueError(f"--method name '{name}' is {'reserved' if name == ORIGINAL else 'given twice'}")
        methods[name] = folder
    return methods


def _kind_criterion(item: str) -> tuple[str, str]:
    kind, _, criterion = item.strip().partition(":")
    if not criterion:
        raise ValueError(f"--questions takes kind:criterion items (e.g. likert:noise), got '{item}'")
    return kind.strip(), criterion.strip()


def _outside_study(label: str, path: str, study: str) -> None:
    if Path(path).absolute().resolve().is_relative_to(Path(study).absolute().resolve()):
        raise ValueError(f"{label} '{path}' is inside the study folder, which readers see; unblinded results "
                         "must be written elsewhere")


def _schedule(folder: str) -> dict:
    from meddiffusion.study.schedule import load_schedule

    return load_schedule(Path(folder) / "schedule.json")


def _write_csv(path: str, fields, rows: list[dict]) -> None:
    import csv

    from meddiffusion.files import atomic_write

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
