//! Drawing a plan: an indented tree for the terminal and Graphviz dot. Owns layout only; the
//! caller says each stage's status.

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use super::Plan;

/// Inputs above which a stage gathers (a report over every evaluation, a selection over
/// trials) rather than continues a chain: drawn at the top level, after the chains.
const GATHERS: usize = 4;

/// Labels are padded to align keys up to this width; longer ones (sweep cells) are not, so a
/// long name does not widen every line.
const ALIGN_MAX: usize = 56;

/// The plan as a tree: each stage under its last (nearest) input, so a chain reads
/// data -> tasks -> train -> embeddings -> evaluate; a stage with several inputs is drawn once
/// and notes how many others it waits for; a stage that gathers many inputs (the report) is
/// drawn at the top level, not under whichever input came last.
pub fn tree(plan: &Plan, status: &dyn Fn(NodeIndex) -> String) -> String {
    let mut out = String::new();
    let mut drawn = vec![false; plan.graph.node_count()];
    let roots: Vec<NodeIndex> = plan
        .graph
        .node_indices()
        .filter(|&i| plan.graph.neighbors_directed(i, Direction::Incoming).next().is_none())
        .collect();
    let width = (plan.graph.node_indices().map(|i| plan.graph[i].name.len()).max().unwrap_or(0) + 4).min(ALIGN_MAX);
    for root in roots {
        draw(plan, root, "", "", true, width, status, &mut drawn, &mut out);
    }
    let mut gatherers: Vec<NodeIndex> = plan.graph.node_indices().filter(|&i| !drawn[i.index()]).collect();
    gatherers.sort_by(|a, b| plan.graph[*a].name.cmp(&plan.graph[*b].name));
    for node in gatherers {
        if !drawn[node.index()] {
            draw(plan, node, "", "", true, width, status, &mut drawn, &mut out);
        }
    }
    out
}

fn gathers(plan: &Plan, node: NodeIndex) -> bool {
    let stage = &plan.graph[node];
    stage.inputs.len() > GATHERS || matches!(stage.components.kind.as_str(), "report" | "select")
}

#[allow(clippy::too_many_arguments)]
fn draw(
    plan: &Plan,
    node: NodeIndex,
    prefix: &str,
    branch: &str,
    is_root: bool,
    width: usize,
    status: &dyn Fn(NodeIndex) -> String,
    drawn: &mut [bool],
    out: &mut String,
) {
    let stage = &plan.graph[node];
    let label = format!("{prefix}{branch}{}", stage.name);
    let other_inputs = stage.inputs.len().saturating_sub(1);
    let note = if gathers(plan, node) {
        format!("  (gathers {} inputs)", stage.inputs.len())
    } else if other_inputs > 0 && stage.inputs.len() > 2 {
        format!("  (+{other_inputs} inputs)")
    } else {
        String::new()
    };
    out.push_str(&format!("{label:<width$} {}  {}{note}\n", stage.short_key(), status(node), width = width + 8));
    drawn[node.index()] = true;
    // Children drawn here: consumers whose last input is this node.
    let mut children: Vec<NodeIndex> = plan
        .graph
        .neighbors_directed(node, Direction::Outgoing)
        .filter(|&c| {
            plan.graph[c].inputs.last().map(|(_, i)| *i) == Some(node) && !drawn[c.index()] && !gathers(plan, c)
        })
        .collect();
    children.sort_by(|a, b| plan.graph[*a].name.cmp(&plan.graph[*b].name));
    children.dedup();
    let child_prefix =
        if is_root { String::new() } else { format!("{prefix}{}", if branch == "└─ " { "   " } else { "│  " }) };
    let count = children.len();
    for (i, child) in children.into_iter().enumerate() {
        if drawn[child.index()] {
            continue;
        }
        let branch = if i + 1 == count { "└─ " } else { "├─ " };
        draw(plan, child, &child_prefix, branch, false, width, status, drawn, out);
    }
}

/// Graphviz dot, stages labelled with name, short key and status.
pub fn dot(plan: &Plan, status: &dyn Fn(NodeIndex) -> String) -> String {
    let mut out = String::from("digraph limaml {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for index in plan.graph.node_indices() {
        let node = &plan.graph[index];
        let state = status(index);
        let color = if state.contains("cached") { "palegreen" } else { "lightyellow" };
        out.push_str(&format!(
            "  n{} [label=\"{}\\n{} {}\", style=filled, fillcolor={color}];\n",
            index.index(),
            node.name.replace('"', "\\\""),
            node.short_key(),
            state
        ));
    }
    for edge in plan.graph.edge_indices() {
        let (from, to) = plan.graph.edge_endpoints(edge).expect("edge has endpoints");
        out.push_str(&format!("  n{} -> n{} [label=\"{}\"];\n", from.index(), to.index(), plan.graph[edge]));
    }
    out.push_str("}\n");
    out
}
