"""Whole renders of the examples against reviewed golden files (regenerate: make golden)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import EXAMPLES

from bakery.config.workshop import load_config
from bakery.vm.stages import STAGES
from bakery.vm.userdata import build_cloud_config, dump_cloud_config, render_user_data
from bakery.workshop.accounts import credentials_path, ensure_credentials

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("BAKERY_REGEN_GOLDEN") == "1"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_examples_match_golden_files(example: Path, tmp_path: Path) -> None:
    # The sheet is a test fixture (made-up passwords): it pins the salts, so hashes are stable.
    sheet = GOLDEN / f"{example.stem}.accounts.csv"
    config = tmp_path / example.name
    shutil.copy(example, config)
    lock = example.with_name(f"{example.stem}.lock.json")
    if lock.exists():
        shutil.copy(lock, tmp_path / lock.name)
    if sheet.exists():
        shutil.copy(sheet, credentials_path(config))
    cfg = load_config(config)
    accounts = ensure_credentials(cfg, credentials_path(config))
    if REGEN:
        shutil.copy(credentials_path(config), sheet)
    for stage in STAGES:
        stage_accounts = None if stage == "bake" else accounts
        # The document itself, reviewable: a big full stage goes to Nova gzipped, which must fit.
        rendered = dump_cloud_config(build_cloud_config(cfg, stage=stage, accounts=stage_accounts))
        render_user_data(cfg, stage=stage, accounts=stage_accounts)
        golden = GOLDEN / f"{example.stem}.{stage}.yaml"
        if REGEN:
            golden.write_text(rendered)
        assert golden.exists(), f"no golden file {golden.name}: run make golden and review it"
        assert rendered == golden.read_text(), f"{golden.name} differs: review, then make golden"
    if cfg.cluster.swarm:
        # A swarm worker's boot stage (its bake stage is the one above: one golden image).
        rendered = dump_cloud_config(build_cloud_config(cfg, stage="boot", role="worker"))
        golden = GOLDEN / f"{example.stem}.worker-boot.yaml"
        if REGEN:
            golden.write_text(rendered)
        assert rendered == golden.read_text(), f"{golden.name} differs: review, then make golden"
