//! Topic routing: subscriptions in a token trie with NATS wildcards (`*` one token, `>` the rest) and queue groups.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::wire::topic::Subscription;

/// Who is subscribed at one pattern.
#[derive(Debug, Default)]
struct Subscribers {
    /// Plain subscriptions: every one gets each message.
    plain: HashSet<u64>,
    /// Queue groups: one member of each gets each message. Members are kept
    /// sorted; `next` turns round-robin.
    groups: BTreeMap<String, Group>,
}

#[derive(Debug, Default)]
struct Group {
    members: Vec<u64>,
    next: usize,
}

impl Subscribers {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    star: Option<Box<Node>>,
    /// Subscribers of the pattern ending in `>` here.
    rest: Subscribers,
    /// Subscribers of the pattern ending exactly here.
    here: Subscribers,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.rest.is_empty()
            && self.here.is_empty()
    }
}

/// The routing table for one server (or one replica).
#[derive(Debug, Default)]
pub(crate) struct Table {
    root: Node,
    /// Every connection's subscriptions, for limits and cleanup on disconnect.
    by_conn: HashMap<u64, HashSet<Subscription>>,
}

impl Table {
    /// Adds a subscription; false if the connection already has it.
    pub(crate) fn subscribe(&mut self, conn: u64, sub: &Subscription) -> bool {
        if !self.by_conn.entry(conn).or_default().insert(sub.clone()) {
            return false;
        }
        let subscribers = subscribers_mut(&mut self.root, &sub.pattern);
        match &sub.group {
            None => {
                subscribers.plain.insert(conn);
            }
            Some(group) => {
                let group = subscribers.groups.entry(group.clone()).or_default();
                if let Err(at) = group.members.binary_search(&conn) {
                    group.members.insert(at, conn);
                }
            }
        }
        true
    }

    /// Removes a subscription; false if the connection did not have it.
    pub(crate) fn unsubscribe(&mut self, conn: u64, sub: &Subscription) -> bool {
        let Some(subs) = self.by_conn.get_mut(&conn) else {
            return false;
        };
        if !subs.remove(sub) {
            return false;
        }
        if subs.is_empty() {
            self.by_conn.remove(&conn);
        }
        let tokens: Vec<&str> = sub.pattern.split('.').collect();
        remove(&mut self.root, &tokens, conn, sub.group.as_deref());
        true
    }

    /// Removes every subscription of a connection; returns them.
    pub(crate) fn remove_connection(&mut self, conn: u64) -> Vec<Subscription> {
        let subs: Vec<Subscription> = self.by_conn.remove(&conn).into_iter().flatten().collect();
        for sub in &subs {
            let tokens: Vec<&str> = sub.pattern.split('.').collect();
            remove(&mut self.root, &tokens, conn, sub.group.as_deref());
        }
        subs
    }

    /// The connections with a subscription (plain or in a group) whose
    /// pattern matches `topic`, in id order.
    pub(crate) fn subscribers_of(&self, topic: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .by_conn
            .iter()
            .filter(|(_, subs)| {
                subs.iter()
                    .any(|s| crate::wire::topic::matches(&s.pattern, topic))
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How many subscriptions a connection holds.
    pub(crate) fn count(&self, conn: u64) -> usize {
        self.by_conn.get(&conn).map_or(0, HashSet::len)
    }

    /// The connections a message on `topic` goes to: every plain subscriber
    /// once, plus one member (round-robin) of each matching queue group.
    /// With `groups` false, queue groups are left out (a backplane balances them).
    pub(crate) fn route(&mut self, topic: &str, groups: bool) -> Vec<u64> {
        let tokens: Vec<&str> = topic.split('.').collect();
        let mut plain = HashSet::new();
        let mut out = Vec::new();
        collect(&mut self.root, &tokens, groups, &mut plain, &mut out);
        out.extend(plain);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// One member (round-robin) of the queue group `group` subscribed at
    /// exactly `pattern`, if it has any here.
    pub(crate) fn pick(&mut self, pattern: &str, group: &str) -> Option<u64> {
        let group = subscribers_at(&mut self.root, pattern)?
            .groups
            .get_mut(group)?;
        if group.members.is_empty() {
            return None;
        }
        let pick = group.members[group.next % group.members.len()];
        group.next = group.next.wrapping_add(1);
        Some(pick)
    }

    /// How many local members the queue group `group` at `pattern` has.
    pub(crate) fn group_len(&mut self, pattern: &str, group: &str) -> usize {
        subscribers_at(&mut self.root, pattern)
            .and_then(|s| s.groups.get(group))
            .map_or(0, |g| g.members.len())
    }

    /// Whether the table holds nothing at all (used to check cleanup).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_empty() && self.by_conn.is_empty()
    }
}

fn subscribers_mut<'a>(root: &'a mut Node, pattern: &str) -> &'a mut Subscribers {
    let mut node = root;
    let mut tokens = pattern.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token == ">" {
            return &mut node.rest;
        }
        node = if token == "*" {
            node.star.get_or_insert_with(Box::default)
        } else {
            node.children.entry(token.to_owned()).or_default()
        };
        if tokens.peek().is_none() {
            return &mut node.here;
        }
    }
    &mut node.here
}

/// The subscribers of exactly `pattern`, without creating nodes.
fn subscribers_at<'a>(root: &'a mut Node, pattern: &str) -> Option<&'a mut Subscribers> {
    let mut node = root;
    let mut tokens = pattern.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token == ">" {
            return Some(&mut node.rest);
        }
        node = if token == "*" {
            node.star.as_deref_mut()?
        } else {
            node.children.get_mut(token)?
        };
        if tokens.peek().is_none() {
            return Some(&mut node.here);
        }
    }
    None
}

/// Removes `conn` from the pattern `tokens`, pruning nodes left empty.
fn remove(node: &mut Node, tokens: &[&str], conn: u64, group: Option<&str>) {
    let Some((first, rest)) = tokens.split_first() else {
        drop_from(&mut node.here, conn, group);
        return;
    };
    if *first == ">" {
        drop_from(&mut node.rest, conn, group);
        return;
    }
    if *first == "*" {
        if let Some(star) = node.star.as_mut() {
            remove(star, rest, conn, group);
            if star.is_empty() {
                node.star = None;
            }
        }
        return;
    }
    if let Some(child) = node.children.get_mut(*first) {
        remove(child, rest, conn, group);
        if child.is_empty() {
            node.children.remove(*first);
        }
    }
}

fn drop_from(subscribers: &mut Subscribers, conn: u64, group: Option<&str>) {
    match group {
        None => {
            subscribers.plain.remove(&conn);
        }
        Some(name) => {
            if let Some(g) = subscribers.groups.get_mut(name) {
                g.members.retain(|&m| m != conn);
                if g.members.is_empty() {
                    subscribers.groups.remove(name);
                }
            }
        }
    }
}

fn take(subscribers: &mut Subscribers, groups: bool, plain: &mut HashSet<u64>, out: &mut Vec<u64>) {
    plain.extend(subscribers.plain.iter().copied());
    if !groups {
        return;
    }
    for group in subscribers.groups.values_mut() {
        if !group.members.is_empty() {
            let pick = group.members[group.next % group.members.len()];
            group.next = group.next.wrapping_add(1);
            out.push(pick);
        }
    }
}

fn collect(
    node: &mut Node,
    tokens: &[&str],
    groups: bool,
    plain: &mut HashSet<u64>,
    out: &mut Vec<u64>,
) {
    let Some((first, rest)) = tokens.split_first() else {
        take(&mut node.here, groups, plain, out);
        return;
    };
    // `>` matches one or more tokens: here there is at least one left.
    take(&mut node.rest, groups, plain, out);
    if let Some(child) = node.children.get_mut(*first) {
        collect(child, rest, groups, plain, out);
    }
    if let Some(star) = node.star.as_mut() {
        collect(star, rest, groups, plain, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(pattern: &str) -> Subscription {
        Subscription {
            pattern: pattern.into(),
            group: None,
        }
    }

    fn grouped(pattern: &str, group: &str) -> Subscription {
        Subscription {
            pattern: pattern.into(),
            group: Some(group.into()),
        }
    }

    #[test]
    fn wildcard_routing_table() {
        let mut t = Table::default();
        t.subscribe(1, &sub("chat.room1"));
        t.subscribe(2, &sub("chat.*"));
        t.subscribe(3, &sub("chat.>"));
        t.subscribe(4, &sub(">"));
        t.subscribe(5, &sub("*.room1"));
        t.subscribe(6, &sub("chat.*.typing"));
        let cases: &[(&str, &[u64])] = &[
            ("chat.room1", &[1, 2, 3, 4, 5]),
            ("chat.room2", &[2, 3, 4]),
            ("chat", &[4]),
            ("chat.room1.typing", &[3, 4, 6]),
            ("news.room1", &[4, 5]),
            ("a.b.c.d", &[4]),
        ];
        for (topic, expected) in cases {
            assert_eq!(&t.route(topic, true), expected, "topic {topic}");
        }
    }

    #[test]
    fn a_connection_gets_a_message_once_whatever_matches() {
        let mut t = Table::default();
        t.subscribe(7, &sub("a.b"));
        t.subscribe(7, &sub("a.*"));
        t.subscribe(7, &sub("a.>"));
        assert_eq!(t.route("a.b", true), [7]);
    }

    #[test]
    fn queue_groups_load_balance_one_member_each() {
        let mut t = Table::default();
        for conn in [1, 2, 3] {
            t.subscribe(conn, &grouped("jobs.>", "workers"));
        }
        t.subscribe(9, &grouped("jobs.>", "audit"));
        t.subscribe(10, &sub("jobs.new"));
        let mut per_worker = HashMap::new();
        for _ in 0..30 {
            let to = t.route("jobs.new", true);
            assert_eq!(
                to.len(),
                3,
                "one worker, the auditor, the plain subscriber: {to:?}"
            );
            assert!(to.contains(&9) && to.contains(&10));
            for c in to.iter().filter(|c| [1, 2, 3].contains(*c)) {
                *per_worker.entry(*c).or_insert(0) += 1;
            }
        }
        assert_eq!(per_worker, HashMap::from([(1, 10), (2, 10), (3, 10)]));
    }

    #[test]
    fn groups_left_to_a_backplane_are_picked_by_pattern_and_name() {
        let mut t = Table::default();
        t.subscribe(1, &grouped("jobs.*", "workers"));
        t.subscribe(2, &grouped("jobs.*", "workers"));
        t.subscribe(3, &grouped("jobs.>", "workers"));
        t.subscribe(4, &sub("jobs.new"));
        assert_eq!(t.route("jobs.new", false), [4]);
        assert_eq!(t.group_len("jobs.*", "workers"), 2);
        assert_eq!(t.group_len("jobs.>", "workers"), 1);
        assert_eq!(t.group_len("jobs.*", "nobody"), 0);
        assert_eq!(t.group_len("other.*", "workers"), 0);
        let picks: Vec<_> = (0..4).map(|_| t.pick("jobs.*", "workers")).collect();
        assert_eq!(picks, [Some(1), Some(2), Some(1), Some(2)]);
        assert_eq!(t.pick("jobs.>", "workers"), Some(3));
        assert_eq!(t.pick("jobs.new", "workers"), None);
        assert_eq!(t.pick("jobs.*.x", "workers"), None);
        t.unsubscribe(3, &grouped("jobs.>", "workers"));
        assert_eq!(t.pick("jobs.>", "workers"), None);
    }

    #[test]
    fn unsubscribe_and_disconnect_clean_up_everything() {
        let mut t = Table::default();
        for i in 0..1_000_000u64 {
            let s = if i % 3 == 0 {
                grouped(&format!("t.{}.>", i % 97), "g")
            } else {
                sub(&format!("t.*.{}", i % 89))
            };
            assert!(t.subscribe(i % 13, &s));
            assert!(t.unsubscribe(i % 13, &s));
        }
        assert!(t.is_empty(), "a million cycles left state behind");
        t.subscribe(1, &sub("a.b"));
        t.subscribe(1, &grouped("a.*", "g"));
        t.subscribe(2, &sub("a.b"));
        assert_eq!(t.remove_connection(1).len(), 2);
        assert_eq!(t.route("a.b", true), [2]);
        t.remove_connection(2);
        assert!(t.is_empty());
    }

    #[test]
    fn duplicate_and_unknown_subscriptions_are_reported() {
        let mut t = Table::default();
        assert!(t.subscribe(1, &sub("a")));
        assert!(!t.subscribe(1, &sub("a")));
        assert_eq!(t.count(1), 1);
        assert!(!t.unsubscribe(1, &sub("b")));
        assert!(!t.unsubscribe(2, &sub("a")));
    }
}
