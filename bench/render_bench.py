"""`make bench`: render time for 10/100/300 users and the user-data size of each stage."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bakery.config.workshop import load_config
from bakery.vm.stages import STAGES
from bakery.vm.userdata import NOVA_USER_DATA_LIMIT, render_user_data
from bakery.workshop.accounts import credentials_path, ensure_credentials

REPEAT = 5


def main() -> None:
    print(f"{'users':>5} {'stage':<5} {'render ms':>10} {'plain b64':>10} {'gzip b64':>9}  fits")
    with tempfile.TemporaryDirectory() as tmp:
        for users in (10, 100, 300):
            config = Path(tmp) / f"w{users}.yaml"
            config.write_text(f"name: bench\nusers: {{count: {users}}}\n")
            sheet = credentials_path(config)
            ensure_credentials(load_config(config), sheet)  # made once, as in real use
            for stage in STAGES:
                times = []
                for _ in range(REPEAT):
                    start = time.perf_counter()
                    # What `bakery render` does: load, read the sheet (re-verifying every hash),
                    # render.
                    cfg = load_config(config)
                    accounts = None if stage == "bake" else ensure_credentials(cfg, sheet)
                    try:
                        auto = render_user_data(cfg, stage=stage, accounts=accounts)
                    except Exception as exc:
                        auto = None
                        print(f"  {exc}")
                    times.append(time.perf_counter() - start)
                plain = render_user_data(cfg, stage=stage, accounts=accounts, gzip_data=None)
                zipped = render_user_data(cfg, stage=stage, accounts=accounts, gzip_data=True)
                fits = "yes" if auto and auto.encoded_size <= NOVA_USER_DATA_LIMIT else "NO"
                print(
                    f"{users:>5} {stage:<5} {statistics.median(times) * 1000:>10.1f} "
                    f"{len(plain.data) * 4 // 3:>10,} {zipped.encoded_size:>9,}  {fits}"
                )
        # The whole command, start-up included, as a user runs it.
        config = Path(tmp) / "w100.yaml"
        bakery = str(Path(sys.executable).parent / "bakery")
        runs = []
        for _ in range(REPEAT):
            start = time.perf_counter()
            subprocess.run(
                [bakery, "render", str(config), "--stage", "boot"], check=True, capture_output=True
            )
            runs.append(time.perf_counter() - start)
        print(
            f"`bakery render` (100 users, boot), whole process: "
            f"{statistics.median(runs) * 1000:.0f} ms median of {REPEAT}"
        )


if __name__ == "__main__":
    main()
