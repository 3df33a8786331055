"""Write example_workflows/*.json by building each workflow in the real ComfyUI frontend.

    .venv/bin/python tools/build_example_workflows.py

The frontend itself serialises the graph, so the files are exactly what a user's Save produces
(widget order, seed controls, link records). Specs live in tools/example_workflow_specs.py.
"""

import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tools"))

BUILD_GRAPH_JS = """
(spec) => {
  const graph = window.app.graph;
  graph.clear();
  const made = {};
  for (const n of spec.nodes) {
    const node = LiteGraph.createNode(n.type);
    if (!node) throw new Error(`unknown node type ${n.type}`);
    node.pos = n.pos;
    graph.add(node);
    if (n.title) node.title = n.title;
    for (const [name, value] of Object.entries(n.widgets)) {
      const widget = (node.widgets || []).find((w) => w.name === name);
      if (!widget) throw new Error(`${n.type} has no widget ${name}`);
      widget.value = value;
    }
    node.setSize(n.size || node.computeSize());
    made[n.key] = node;
  }
  const slot = (slots, want, what) => {  // by index, by name, else the first of that type
    let index = typeof want === "number" ? want : slots.findIndex((s) => s.name === want);
    if (index < 0) index = slots.findIndex((s) => s.type === want);
    if (index < 0) throw new Error(`no ${what} ${want}`);
    return index;
  };
  for (const [from, output, to, input] of spec.links) {
    const source = made[from], target = made[to];
    if (!source || !target) throw new Error(`link ${from} -> ${to}: unknown node`);
    const link = source.connect(slot(source.outputs, output, `output of ${from}`), target,
                                slot(target.inputs, input, `input of ${to}`));
    if (!link) throw new Error(`could not link ${from}.${output} -> ${to}.${input}`);
  }
  for (const g of spec.groups) {
    const group = new LiteGraph.LGraphGroup(g.title);
    graph.add(group);
    group.pos = [g.bounding[0], g.bounding[1]];
    group.size = [g.bounding[2], g.bounding[3]];
  }
  return JSON.stringify(graph.serialize());  // as Save writes it: undefined fields dropped
}
"""


def main() -> None:
    from browser import comfy_page
    from comfy_host import setup_host
    from comfy_server import make_server
    from example_workflow_specs import WORKFLOWS

    setup_host(cpu=True)
    out_dir = REPO / "example_workflows"
    out_dir.mkdir(exist_ok=True)
    server = make_server(Path(tempfile.mkdtemp(prefix="tav-workflows-"))).start()
    try:
        with comfy_page(server.url) as page:
            for make in WORKFLOWS:
                workflow = make()
                spec = {"nodes": [asdict(n) for n in workflow.nodes], "links": workflow.links,
                        "groups": workflow.groups}
                graph = json.loads(page.evaluate(BUILD_GRAPH_JS, spec))
                path = out_dir / f"{workflow.name}.json"
                path.write_text(json.dumps(graph, indent=2) + "\n")
                print(f"wrote {path.relative_to(REPO)} ({len(graph['nodes'])} nodes, {len(graph['links'])} links)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
