//! The stage-instance DAG: cycle detection and Graphviz / Mermaid export.

use super::diag::Diagnostics;
use super::types::Pipeline;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

/// Edges point from a dependency to the instance that uses it.
pub fn graph(p: &Pipeline) -> DiGraph<usize, ()> {
    let mut g = DiGraph::with_capacity(p.instances.len(), p.instances.len());
    let nodes: Vec<NodeIndex> = (0..p.instances.len()).map(|i| g.add_node(i)).collect();
    for i in 0..p.instances.len() {
        for dep in p.deps(i) {
            g.add_edge(nodes[dep], nodes[i], ());
        }
    }
    g
}

/// Instances in an order where every dependency comes first.
pub fn topo_order(p: &Pipeline) -> Vec<usize> {
    let g = graph(p);
    toposort(&g, None).map(|v| v.into_iter().map(|n| g[n]).collect()).unwrap_or_default()
}

pub(crate) fn check_acyclic(p: &Pipeline, d: &mut Diagnostics) {
    let g = graph(p);
    if toposort(&g, None).is_ok() {
        return;
    }
    for scc in tarjan_scc(&g) {
        if scc.len() > 1 {
            let mut ids: Vec<usize> = scc.iter().map(|n| g[*n]).collect();
            ids.sort_unstable();
            let first = &p.instances[ids[0]];
            let mut names: Vec<String> = ids.iter().map(|&i| p.instances[i].id.clone()).collect();
            names.push(names[0].clone());
            d.error(first.pos, Some(&first.id), None, format!("dependency cycle: {}", names.join(" -> ")));
        }
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The instance DAG as a Graphviz `digraph` (`saepipe dag --format dot`): one box
/// per instance labelled with its id and op, input edges labelled with the
/// parameter, `needs:` edges dashed.
pub fn to_dot(p: &Pipeline) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n",
        quote(&p.name)
    );
    for (i, inst) in p.instances.iter().enumerate() {
        out.push_str(&format!("  n{i} [label=\"{}\\n({})\"];\n", quote(&inst.id), inst.op.name()));
    }
    for (i, inst) in p.instances.iter().enumerate() {
        for r in &inst.inputs {
            for t in &r.targets {
                out.push_str(&format!("  n{} -> n{i} [label=\"{}\"];\n", t.instance, quote(&r.label)));
            }
        }
        for n in &inst.needs {
            out.push_str(&format!("  n{n} -> n{i} [style=dashed];\n"));
        }
    }
    out.push_str("}\n");
    out
}

/// The instance DAG as a Mermaid `flowchart LR` (`saepipe dag --format mermaid`),
/// for Markdown that renders Mermaid.
pub fn to_mermaid(p: &Pipeline) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, inst) in p.instances.iter().enumerate() {
        out.push_str(&format!("  n{i}[\"{}<br/>({})\"]\n", inst.id.replace('"', "#quot;"), inst.op.name()));
    }
    for (i, inst) in p.instances.iter().enumerate() {
        for r in &inst.inputs {
            for t in &r.targets {
                out.push_str(&format!("  n{} -->|{}| n{i}\n", t.instance, r.label));
            }
        }
        for n in &inst.needs {
            out.push_str(&format!("  n{n} -.-> n{i}\n"));
        }
    }
    out
}
