#!/usr/bin/env bash
# Looks at the study report as a reader does: renders it in headless Chromium and writes screenshots.
#
#   benchmarks/report_screenshot.sh [OUT_DIR] [WORKDIR CONFIG]
#
# Always: a synthetic study (peftlab/results/synthetic.py: 6 methods incl. knob-less IA3/BitFit, 3 budgets,
# 3 seeds) -> write_study_report -> OUT_DIR/{summary,table,quality_vs_budget,pareto}.png.
# With WORKDIR and CONFIG (a copy of the workflow that has finished CONFIG, e.g. config/test.yaml), also
# `snakemake --report` there -> OUT_DIR/report.html, OUT_DIR/snakemake_report.png (its landing page) and
# OUT_DIR/snakemake_report_summary.png (after clicking the landing page's summary link).
# Needs chromium (Debian: apt-get install -y chromium); not part of the CI suite.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-/tmp/report_screenshots}")
py=${PYTHON:-python}
mkdir -p "$out"
shot() {  # shot <html file> <png> [height]
    chromium --headless --no-sandbox --hide-scrollbars --virtual-time-budget=5000 \
        --screenshot="$2" --window-size="1400,${3:-1000}" "file://$1" 2>/dev/null
    test -s "$2" && echo "wrote $2"
}

study=$out/synthetic
rm -rf "$study"
PYTHONPATH=$here "$py" - "$study" <<'PY'
import sys
from pathlib import Path

from peftlab.results import aggregate
from peftlab.results.report import write_study_report
from peftlab.results.synthetic import write_synthetic_grid

root = Path(sys.argv[1])
dirs = write_synthetic_grid(root, study="demo", tasks=["en-de", "en-fi"],
                            methods=["full", "lora", "adapter", "ia3", "bitfit", "prefix"],
                            budgets=["0.001", "0.01", "0.1"], seeds=[0, 1, 2])
aggregate(dirs, root / "results.duckdb")
write_study_report(root / "results.duckdb", "demo", root / "report")
PY
shot "$study/report/summary.html" "$out/summary.png" 1600
shot "$study/report/tables/method_comparison.html" "$out/table.png"
cp "$study/report/quality_vs_budget/en-de.png" "$out/quality_vs_budget.png"
cp "$study/report/pareto/en-de.png" "$out/pareto.png"

if [ $# -ge 3 ]; then
    (cd "$2" && snakemake --report "$out/report.html" --report-metadata report/metadata.yaml --configfile "$3")
    shot "$out/report.html" "$out/snakemake_report.png"
    # one click on the landing page's summary link: the study's summary, shown inline in the report
    "$py" - "$out/report.html" "$out/report_click.html" <<'PY'
import sys

html = open(sys.argv[1], encoding="utf-8").read()
click = "document.querySelector('a[href^=\"javascript:void\"]').click()"
assert "javascript:void(app.showResultInfo(" in html, "no summary link on the report's landing page"
open(sys.argv[2], "w", encoding="utf-8").write(html.replace("</body>", f"<script>setTimeout(() => {click}, 500)</script></body>"))
PY
    shot "$out/report_click.html" "$out/snakemake_report_summary.png"
fi
