"""README's measured tables are copies of benchmarks/results (tools/sync_readme.py)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_benchmark_results():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_readme.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sync_detects_a_stale_table(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tools"))
    import sync_readme

    text = "x\n<!-- BEGIN generated: brecq_speed.md#0 -->\nold\n<!-- END generated -->\n"
    new = sync_readme.sync(text)
    assert "old" not in new and "| model |" in new
    assert sync_readme.sync(new) == new
