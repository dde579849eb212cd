"""Put a notebook generator's current cell sources into an executed notebook whose cells have the same ids
(for source edits that do not change what a cell prints at the defaults, e.g. a smoke-test parameter).

    python scripts/merge_sources.py EXECUTED.ipynb GENERATED.ipynb   # writes EXECUTED in place
"""
import json
import sys

executed, generated = (json.load(open(p)) for p in sys.argv[1:3])
ids = [c["id"] for c in executed["cells"]]
if ids != [c["id"] for c in generated["cells"]]:
    sys.exit("the notebooks' cells differ: re-execute instead")
changed = 0
for old, new in zip(executed["cells"], generated["cells"]):
    src = new["source"] if isinstance(new["source"], str) else "".join(new["source"])
    if src != (old["source"] if isinstance(old["source"], str) else "".join(old["source"])):
        old["source"] = src
        changed += 1
    old["metadata"] = new["metadata"]
json.dump(executed, open(sys.argv[1], "w"), indent=1, ensure_ascii=False)
open(sys.argv[1], "a").write("\n")
print(f"{changed} cell source(s) replaced")
