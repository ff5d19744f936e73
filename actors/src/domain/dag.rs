//! Task graphs: a DAG submitted as one request is checked in topological order before any of
//! it is created; a dependency added later must not close a cycle.

use std::collections::{BTreeMap, BTreeSet};

use super::{DependencyKind, Refusal};

/// The most tasks one submitted graph may have.
pub const MAX_GRAPH_TASKS: usize = 1000;

/// One task of a submitted graph, as far as the graph is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The task's id.
    pub task_id: String,
    /// Its upstream edges: (upstream id, kind, contract key).
    pub upstream: Vec<(String, DependencyKind, Option<String>)>,
    /// The contract keys its result promises.
    pub contracts: Vec<String>,
}

/// Checks a graph and gives its tasks in an order where each comes after its upstream tasks.
/// `existing` answers, for an upstream outside the graph, the contracts of that existing task
/// (`None` if there is no such task).
pub fn check(
    nodes: &[Node],
    existing: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<usize>, Refusal> {
    if nodes.len() > MAX_GRAPH_TASKS {
        return Err(Refusal(format!(
            "a graph has at most {MAX_GRAPH_TASKS} tasks; this one has {}",
            nodes.len()
        )));
    }
    let mut index = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        if index.insert(node.task_id.as_str(), i).is_some() {
            return Err(Refusal(format!(
                "task `{}` appears twice in the graph",
                node.task_id
            )));
        }
    }
    for node in nodes {
        for (upstream, kind, key) in &node.upstream {
            let contracts = match index.get(upstream.as_str()) {
                Some(i) => nodes[*i].contracts.clone(),
                None => existing(upstream).ok_or_else(|| {
                    Refusal(format!(
                        "task `{}` depends on unknown task `{upstream}`",
                        node.task_id
                    ))
                })?,
            };
            if *kind == DependencyKind::Input {
                let key = key.as_ref().ok_or_else(|| {
                    Refusal(format!(
                        "task `{}`: an input dependency on `{upstream}` needs a contract key",
                        node.task_id
                    ))
                })?;
                if !contracts.contains(key) {
                    return Err(Refusal(format!(
                        "task `{}` wants contract `{key}` from `{upstream}`, which does not promise it",
                        node.task_id
                    )));
                }
            }
        }
    }
    let edges: Vec<(String, String)> = nodes
        .iter()
        .flat_map(|n| {
            n.upstream
                .iter()
                .map(|(u, _, _)| (u.clone(), n.task_id.clone()))
        })
        .collect();
    if let Some(cycle) = find_cycle(&edges) {
        return Err(Refusal(format!(
            "the graph has a cycle: {}",
            cycle.join(" → ")
        )));
    }
    // Kahn's order over the graph's own edges.
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut waiting = vec![0usize; nodes.len()];
    for (j, node) in nodes.iter().enumerate() {
        for (upstream, _, _) in &node.upstream {
            if let Some(&i) = index.get(upstream.as_str()) {
                downstream[i].push(j);
                waiting[j] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|i| waiting[*i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &j in &downstream[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(j);
            }
        }
    }
    Ok(order)
}

/// A cycle among `edges` (upstream, downstream), as the ids along it back to the first.
/// Depth-first with a stack of its own, so a long chain cannot exhaust the thread's.
pub fn find_cycle(edges: &[(String, String)]) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges {
        next.entry(from.as_str()).or_default().push(to.as_str());
    }
    let mut done = BTreeSet::new();
    for start in next.keys().copied() {
        if !done.insert(start) {
            continue;
        }
        // The path from `start`: each node with the number of its children looked at.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        let mut on_path: BTreeMap<&str, usize> = BTreeMap::from([(start, 0)]);
        while let Some(&(node, looked)) = path.last() {
            let children = next.get(node).map_or(&[][..], Vec::as_slice);
            let Some(&child) = children.get(looked) else {
                on_path.remove(node);
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            if let Some(&at) = on_path.get(child) {
                let mut cycle: Vec<String> =
                    path[at..].iter().map(|(n, _)| n.to_string()).collect();
                cycle.push(child.to_owned());
                return Some(cycle);
            }
            if done.insert(child) {
                on_path.insert(child, path.len());
                path.push((child, 0));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        id: &str,
        upstream: &[(&str, DependencyKind, Option<&str>)],
        contracts: &[&str],
    ) -> Node {
        Node {
            task_id: id.into(),
            upstream: upstream
                .iter()
                .map(|(u, k, c)| (u.to_string(), *k, c.map(Into::into)))
                .collect(),
            contracts: contracts.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn orders_upstream_first() {
        use DependencyKind::*;
        let nodes = [
            node("c", &[("b", Blocks, None), ("a", Input, Some("k"))], &[]),
            node("b", &[("a", Related, None)], &[]),
            node("a", &[], &["k"]),
        ];
        let order: Vec<&str> = check(&nodes, |_| None)
            .unwrap()
            .iter()
            .map(|i| nodes[*i].task_id.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn cycles_unknown_ids_and_missing_contracts_are_named() {
        use DependencyKind::*;
        let cycle = [
            node("a", &[("c", Blocks, None)], &[]),
            node("b", &[("a", Blocks, None)], &[]),
            node("c", &[("b", Blocks, None)], &[]),
        ];
        assert_eq!(
            check(&cycle, |_| None).unwrap_err().0,
            "the graph has a cycle: a → b → c → a"
        );
        let unknown = [node("a", &[("zz", Blocks, None)], &[])];
        assert_eq!(
            check(&unknown, |_| None).unwrap_err().0,
            "task `a` depends on unknown task `zz`"
        );
        let missing = [
            node("a", &[], &["x"]),
            node("b", &[("a", Input, Some("schema"))], &[]),
        ];
        assert_eq!(
            check(&missing, |_| None).unwrap_err().0,
            "task `b` wants contract `schema` from `a`, which does not promise it"
        );
        let outside = [node("b", &[("old", Input, Some("k"))], &[])];
        assert!(check(&outside, |id| (id == "old").then(|| vec!["k".to_string()])).is_ok());
    }

    #[test]
    fn an_added_edge_that_closes_a_loop_is_found() {
        let edges = [("a", "b"), ("b", "c")].map(|(f, t)| (f.to_string(), t.to_string()));
        assert_eq!(find_cycle(&edges), None);
        let closing = [&edges[..], &[("c".to_string(), "a".to_string())]].concat();
        assert_eq!(find_cycle(&closing).unwrap(), ["a", "b", "c", "a"]);
    }

    #[test]
    fn long_chains_and_big_graphs_are_handled_without_recursion() {
        let chain: Vec<(String, String)> = (0..200_000)
            .map(|i| (format!("t{i}"), format!("t{}", i + 1)))
            .collect();
        assert_eq!(find_cycle(&chain), None);
        let closed = [&chain[..], &[("t200000".to_string(), "t0".to_string())]].concat();
        assert_eq!(find_cycle(&closed).map(|c| c.len()), Some(200_002));
        let nodes: Vec<Node> = (0..MAX_GRAPH_TASKS)
            .map(|i| {
                let upstream =
                    (i > 0).then(|| (format!("t{}", i - 1), DependencyKind::Blocks, None));
                Node {
                    task_id: format!("t{i}"),
                    upstream: upstream.into_iter().collect(),
                    contracts: Vec::new(),
                }
            })
            .collect();
        let order = check(&nodes, |_| None).unwrap();
        assert_eq!(order, (0..MAX_GRAPH_TASKS).collect::<Vec<_>>());
        let too_big = [&nodes[..], &[node("extra", &[], &[])]].concat();
        assert_eq!(
            check(&too_big, |_| None).unwrap_err().0,
            "a graph has at most 1000 tasks; this one has 1001"
        );
    }
}
