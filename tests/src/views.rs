//! What a node says about the cluster, read as a user would with `clump ps` and `clump nodes`.

use anyhow::{bail, Result};
use clump_lab::{Lab, Node};
use serde_json::Value;

use crate::{console_json, sh};

/// The cluster's jobs as `node` gathers them (`clump ps --json`).
pub fn cluster_ps(node: &mut Node) -> Result<Vec<Value>> {
    match console_json(&sh(node, "clump ps --json")?, '[', ']')? {
        Value::Array(a) => Ok(a),
        other => bail!("`clump ps --json` is not a list: {other}"),
    }
}

/// The jobs `node` itself holds, its own and its guests (`clump ps --local --json`).
pub fn local_ps(node: &mut Node) -> Result<Vec<Value>> {
    match console_json(&sh(node, "clump ps --local --json")?, '[', ']')? {
        Value::Array(a) => Ok(a),
        other => bail!("`clump ps --local --json` is not a list: {other}"),
    }
}

/// `clump nodes --json` of `node`.
pub fn node_map(node: &mut Node) -> Result<Value> {
    console_json(&sh(node, "clump nodes --json")?, '{', '}')
}

/// The state node `number` has in `map` ("alive", "suspect", "dead", ...).
pub fn state_of(map: &Value, number: u64) -> Option<String> {
    map["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["number"] == number)
        .and_then(|n| n["state"].as_str())
        .map(str::to_owned)
}

/// Whether every node's map shows every other node alive (`num[i]` is lab node `i`'s number).
pub fn all_alive(lab: &mut Lab, num: &[u64]) -> Result<bool> {
    for i in 0..num.len() {
        let map = node_map(lab.node(i)?)?;
        let mut others = num.iter().enumerate().filter(|(k, _)| *k != i);
        if others.any(|(_, n)| state_of(&map, *n).as_deref() != Some("alive")) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The node numbers where job `id` runs, from every node's own list (`num[i]` is lab node
/// `i`'s number): exactly one when all is well (a stopped copy left behind, or a restored copy
/// beside a resumed one, shows as two).
pub fn running_on(lab: &mut Lab, num: &[u64], id: &str) -> Result<Vec<u64>> {
    let mut on = Vec::new();
    for (i, n) in num.iter().enumerate() {
        let jobs = local_ps(lab.node(i)?)?;
        if jobs
            .iter()
            .any(|j| j["id"] == id && j["node"] == *n && j["state"] == "running")
        {
            on.push(*n);
        }
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_states_are_read_from_the_map() {
        let m: Value = serde_json::from_str(
            r#"{"this": "ab", "nodes": [{"number": 101, "state": "self"}, {"number": 102, "state": "suspect"}]}"#,
        )
        .unwrap();
        assert_eq!(state_of(&m, 102).as_deref(), Some("suspect"));
        assert_eq!(state_of(&m, 103), None);
    }
}
