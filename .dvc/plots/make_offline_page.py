"""Write the page template of `dvc plots show` (.dvc/config: plots.html_template) with vega, vega-lite and
vega-embed inlined, so the page draws its charts without a network. Run by setup.sh:

    python .dvc/plots/make_offline_page.py <folder with vega-*/build/*.min.js> .dvc/plots/offline.html
"""
import sys
from pathlib import Path

SCRIPTS = ["vega.min.js", "vega-lite.min.js", "vega-embed.min.js"]  # load order: vega-lite and vega-embed need vega


def main(src, dst):
    src, dst = Path(src), Path(dst)
    found = {p.name: p for p in src.glob("*/build/*.min.js")}
    missing = [s for s in SCRIPTS if s not in found]
    if missing: sys.exit(f"{src}: no {', '.join(missing)} under */build/ (npm pack vega vega-lite vega-embed first)")
    # a literal "</script" inside inlined code would end the tag early
    tags = "\n".join(f"<script>/* {found[s].parent.parent.name}/build/{s} */\n"
                     + found[s].read_text(encoding="utf8").replace("</script", "<\\/script") + "\n</script>" for s in SCRIPTS)
    page = (Path(__file__).parent / "offline.html.in").read_text(encoding="utf8")
    if "<!-- VEGA_SCRIPTS -->" not in page or "{plot_divs}" not in page: sys.exit("offline.html.in: markers missing")
    dst.write_text(page.replace("<!-- VEGA_SCRIPTS -->", tags), encoding="utf8")
    print(f"wrote {dst} ({dst.stat().st_size // 1024} kB): dvc plots show works offline")


if __name__ == "__main__":
    main(*sys.argv[1:3])
