//! Several nodes on one PostgreSQL database: who is alive, and which cues each one times.
//!
//! The cues are split into [`PARTITIONS`] partitions by a hash of their id. A node leases the
//! partitions it holds in `cueapi_partitions` and renews the leases with each beat, in the same
//! transaction that says it is alive in `cueapi_nodes`. Each beat also evens out the shares: a
//! node holding more than its fair share of the live nodes releases the extra partitions, and a
//! node holding fewer takes free ones and those whose lease ran out (their node died or lost the
//! database). Every time is the database's clock, so the nodes' own clocks need not agree.
//!
//! A partition says which node *times* a cue's ticks and takes over its work when a node dies;
//! it is not what makes a tick fire once. That is the store's unit of work, a SERIALIZABLE
//! transaction that advances the cue and writes the execution under its unique occurrence key:
//! two nodes that both believe they hold a cue (one of them cut off from the database past its
//! lease) cannot both commit the same tick.

use serde_json::Value;

use super::sql::{params, Db, Dialect};
use crate::clock::Millis;
use crate::error::Result;

/// The number of partitions (also written into migration 0003): 60 shares evenly between 1, 2,
/// 3, 4, 5 or 6 nodes, and fits one `u64` bit set.
pub const PARTITIONS: u32 = 60;

/// Every partition, as a bit set.
pub const ALL: u64 = (1u64 << PARTITIONS) - 1;

/// The partition of a cue: FNV-1a of its id.
pub fn partition(cue_id: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cue_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(PARTITIONS)) as u32
}

/// Whether the partition set `parts` holds the cue `cue_id`.
pub fn holds(parts: u64, cue_id: &str) -> bool {
    parts & (1u64 << partition(cue_id)) != 0
}

/// A live node as the database sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: String,
    pub started_at: Millis,
    pub seen_at: Millis,
    /// What the node said about itself at its last beat.
    pub info: Value,
}

/// What one beat found.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    /// The database's clock at the beat.
    pub now: Millis,
    /// The partitions this node holds now, until `now + lease`.
    pub held: u64,
    /// The live nodes (this one included), by id.
    pub live: Vec<Node>,
}

/// Which work a node takes over: the cues of `parts`, and the attempts of nodes not in `live`.
#[derive(Clone, Debug)]
pub struct Scope {
    pub parts: u64,
    pub live: Vec<String>,
}

impl Scope {
    /// Everything (one process owns the database).
    pub fn everything() -> Scope {
        Scope {
            parts: ALL,
            live: Vec::new(),
        }
    }

    /// Whether the cue is in the scope's partitions.
    pub fn holds(&self, cue_id: &str) -> bool {
        holds(self.parts, cue_id)
    }

    /// Whether an attempt claimed by `node` is abandoned: its node is not alive.
    pub fn abandoned(&self, node: Option<&str>) -> bool {
        node.is_none_or(|n| !self.live.iter().any(|l| l == n))
    }
}

/// The database's clock in Unix milliseconds.
fn db_now(conn: &Db<'_>) -> Result<Millis> {
    conn.query_row(
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        params![],
        |r| r.get(0),
    )
}

/// The fair share of the node at `index` among `n` live nodes: the partitions split as evenly
/// as they go, the first nodes taking one more when they do not split exactly.
pub fn fair_share(index: usize, n: usize) -> usize {
    let (p, n) = (PARTITIONS as usize, n.max(1));
    p / n + usize::from(index < p % n)
}

/// Says `node` is alive (with `info`), renews its leases for `lease_ms`, and evens out the
/// shares. Nodes silent for ten leases are forgotten.
pub fn beat(conn: &Db<'_>, node: &str, info: &str, lease_ms: i64) -> Result<Membership> {
    let now = db_now(conn)?;
    conn.execute(
        "INSERT INTO cueapi_nodes (id, started_at, seen_at, info) VALUES (?1, ?2, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, info = excluded.info",
        params![node, now, info],
    )?;
    conn.execute(
        "DELETE FROM cueapi_nodes WHERE seen_at < ?1",
        params![now - 10 * lease_ms],
    )?;
    let live = live_nodes(conn, now, lease_ms)?;
    let until = now + lease_ms;
    let mut mine: Vec<i64> = conn
        .prepare_cached("UPDATE cueapi_partitions SET until = ?2 WHERE holder = ?1 RETURNING part")?
        .query_map(params![node, until], |r| r.get(0))?;
    mine.sort_unstable();
    let index = live.iter().position(|n| n.id == node).unwrap_or(0);
    let share = fair_share(index, live.len());
    while mine.len() > share {
        if let Some(extra) = mine.pop() {
            conn.execute(
                "UPDATE cueapi_partitions SET holder = NULL, until = 0 WHERE part = ?1",
                params![extra],
            )?;
        }
    }
    if mine.len() < share {
        let free: Vec<i64> = conn
            .prepare_cached(
                "SELECT part FROM cueapi_partitions WHERE holder IS NULL OR until < ?1
                 ORDER BY part LIMIT ?2",
            )?
            .query_map(params![now, (share - mine.len()) as i64], |r| r.get(0))?;
        for part in free {
            conn.execute(
                "UPDATE cueapi_partitions SET holder = ?2, until = ?3 WHERE part = ?1",
                params![part, node, until],
            )?;
            mine.push(part);
        }
    }
    let held = mine
        .iter()
        .filter(|p| (0..i64::from(PARTITIONS)).contains(p))
        .fold(0u64, |set, p| set | (1u64 << p));
    Ok(Membership { now, held, live })
}

/// The nodes heard from within a lease of `now`, by id.
pub fn live_nodes(conn: &Db<'_>, now: Millis, lease_ms: i64) -> Result<Vec<Node>> {
    conn.prepare_cached(
        "SELECT id, started_at, seen_at, info FROM cueapi_nodes WHERE seen_at >= ?1 ORDER BY id",
    )?
    .query_map(params![now - lease_ms], |r| {
        let info: String = r.get(3)?;
        Ok(Node {
            id: r.get(0)?,
            started_at: r.get(1)?,
            seen_at: r.get(2)?,
            info: serde_json::from_str(&info).unwrap_or(Value::Null),
        })
    })
}

/// A node leaving in good order: its partitions are free at once for the others to take, and
/// it is no longer counted among the live.
pub fn leave(conn: &Db<'_>, node: &str) -> Result<()> {
    conn.execute(
        "UPDATE cueapi_partitions SET holder = NULL, until = 0 WHERE holder = ?1",
        params![node],
    )?;
    conn.execute("DELETE FROM cueapi_nodes WHERE id = ?1", params![node])?;
    Ok(())
}

/// The channel on which nodes hear of cues created or changed elsewhere.
pub const CUES_CHANNEL: &str = "cueapi_cues";

/// Tells the listening nodes, when this transaction commits, that `node` created or changed
/// these cues: `node:id,id,…`, in notifications of at most about 7,000 bytes (the server's
/// limit is 8,000). Nothing on SQLite, where one process owns the database.
pub fn announce(conn: &Db<'_>, node: &str, cue_ids: &[String]) -> Result<()> {
    if conn.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let head = format!("{node}:");
    let mut payload = head.clone();
    for id in cue_ids {
        if payload.len() > head.len() && payload.len() + id.len() >= 7_000 {
            send(conn, &payload)?;
            payload.truncate(head.len());
        }
        if payload.len() > head.len() {
            payload.push(',');
        }
        payload.push_str(id);
    }
    if payload.len() > head.len() {
        send(conn, &payload)?;
    }
    Ok(())
}

fn send(conn: &Db<'_>, payload: &str) -> Result<()> {
    conn.query_row(
        &format!("SELECT pg_notify('{CUES_CHANNEL}', ?1)"),
        params![payload],
        |_| Ok(()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_every_partition() {
        for n in 1..=7 {
            let total: usize = (0..n).map(|i| fair_share(i, n)).sum();
            assert_eq!(total, PARTITIONS as usize, "{n} nodes");
            let (lo, hi) = (fair_share(n - 1, n), fair_share(0, n));
            assert!(hi - lo <= 1, "{n} nodes: {hi} and {lo}");
        }
    }

    #[test]
    fn partitions_spread_cue_ids() {
        let mut counts = [0u32; PARTITIONS as usize];
        for i in 0..6_000 {
            counts[partition(&format!("cue_{i:012x}")) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (50..=150).contains(&c)),
            "{counts:?}"
        );
        assert!(holds(ALL, "anything"));
        assert!(!holds(0, "anything"));
    }
}
