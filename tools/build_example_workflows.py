"""Write example_workflows/*.json by building each workflow in the real ComfyUI frontend.

    .venv/bin/python tools/build_example_workflows.py

The frontend itself serialises the graph, so the files are exactly what a user's Save produces
(widget order, seed controls, link records, Reroute nodes, modes, groups fitted around their nodes).
Specs live in dev/tav_dev/example_workflow_specs.py.
"""

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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
    if (n.type === "Reroute") node.properties.showOutputText = true;  // the reroute shows the type it carries
    for (const [name, value] of Object.entries(n.widgets)) {
      const widget = (node.widgets || []).find((w) => w.name === name);
      if (!widget) throw new Error(`${n.type} has no widget ${name}`);
      widget.value = value;
    }
    const computed = node.computeSize();
    node.setSize(n.size || [Math.max(n.width || 0, computed[0]), computed[1]]);
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
  for (const n of spec.nodes) {
    if (n.type === "Reroute") made[n.key].setSize(made[n.key].computeSize());  // as wide as its label
    if (n.mode) made[n.key].mode = n.mode;
  }
  for (const g of spec.groups) {
    const group = new LiteGraph.LGraphGroup(g.title);
    if (g.color) group.color = LGraphCanvas.node_colors[g.color].groupcolor;
    graph.add(group);
    if (g.nodes) {  // fitted around its nodes, title bars included
      const members = g.nodes.map((key) => made[key]);
      if (members.some((node) => !node)) throw new Error(`group ${g.title}: unknown node in ${g.nodes}`);
      const pad = g.padding ?? 20, box = [Infinity, Infinity, -Infinity, -Infinity];
      for (const node of members) {  // node.boundingRect is only refreshed when drawn
        const title = node.constructor.title_mode === LiteGraph.NO_TITLE ? 0 : LiteGraph.NODE_TITLE_HEIGHT;
        box[0] = Math.min(box[0], node.pos[0]);
        box[1] = Math.min(box[1], node.pos[1] - title);
        box[2] = Math.max(box[2], node.pos[0] + node.size[0]);
        box[3] = Math.max(box[3], node.pos[1] + node.size[1]);
      }
      group.pos = [box[0] - pad, box[1] - pad - group.titleHeight];
      group.size = [box[2] - box[0] + 2 * pad, box[3] - box[1] + 2 * pad + group.titleHeight];
    } else {
      group.pos = [g.bounding[0], g.bounding[1]];
      group.size = [g.bounding[2], g.bounding[3]];
    }
  }
  return JSON.stringify(graph.serialize());  // as Save writes it: undefined fields dropped
}
"""


def main() -> None:
    from tav_dev.browser import comfy_page
    from tav_dev.comfy_host import setup_host
    from tav_dev.comfy_server import make_server
    from tav_dev.example_workflow_specs import WORKFLOWS

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
