//! Symbol budgets: the distinct symbols held by the sessions of one address and of one user.
//!
//! A symbol counts once per address (and per user) however many of its sessions hold it,
//! so many sessions of one client cannot make the edge carry more than its budget; each
//! session's own symbols ([`Held`]) are given back when it unsubscribes or ends.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use tickmesh_core::Symbol;

use super::Admission;
use crate::config::LimitsConfig;

/// Why a symbol was not taken into a budget; the client gets `too_many_symbols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetRefusal {
    #[error("the sessions of this address may hold at most {0} distinct symbols")]
    Ip(usize),
    #[error("the sessions of this user may hold at most {0} distinct symbols")]
    User(usize),
}

/// How many sessions of each address and user hold each symbol.
#[derive(Debug, Default)]
pub(super) struct Holders {
    per_ip: HashMap<IpAddr, HashMap<Symbol, u32>>,
    per_user: HashMap<String, HashMap<Symbol, u32>>,
}

/// The symbols one session holds in the budgets.
pub(super) type Held = HashSet<Symbol>;

fn add<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, HashMap<Symbol, u32>>,
    key: &K,
    symbol: &Symbol,
) {
    *map.entry(key.clone())
        .or_default()
        .entry(symbol.clone())
        .or_default() += 1;
}

fn remove<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashMap<Symbol, u32>>,
    key: &K,
    symbol: &Symbol,
) {
    let Some(symbols) = map.get_mut(key) else {
        return;
    };
    if let Some(n) = symbols.get_mut(symbol) {
        *n -= 1;
        if *n == 0 {
            symbols.remove(symbol);
        }
    }
    if symbols.is_empty() {
        map.remove(key);
    }
}

/// Whether `key`'s budget has room for `symbol` (held already, or under `max`).
fn has_room<K: std::hash::Hash + Eq>(
    map: &HashMap<K, HashMap<Symbol, u32>>,
    key: &K,
    symbol: &Symbol,
    max: usize,
) -> bool {
    map.get(key)
        .is_none_or(|s| s.contains_key(symbol) || s.len() < max)
}

impl Admission {
    /// Takes `symbol` into the budgets of the session's address and user; a symbol the
    /// session holds already costs nothing.
    pub fn hold(&mut self, symbol: &Symbol, limits: &LimitsConfig) -> Result<(), BudgetRefusal> {
        if self.held.contains(symbol) {
            return Ok(());
        }
        let mut h = self
            .registry
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !has_room(&h.per_ip, &self.ip, symbol, limits.max_symbols_per_ip) {
            return Err(BudgetRefusal::Ip(limits.max_symbols_per_ip));
        }
        if let Some(user) = &self.user
            && !has_room(&h.per_user, user, symbol, limits.max_symbols_per_user)
        {
            return Err(BudgetRefusal::User(limits.max_symbols_per_user));
        }
        add(&mut h.per_ip, &self.ip, symbol);
        if let Some(user) = &self.user {
            add(&mut h.per_user, user, symbol);
        }
        self.held.insert(symbol.clone());
        Ok(())
    }

    /// Gives `symbol` back (after an unsubscribe, or a subscription that did not happen).
    pub fn release(&mut self, symbol: &Symbol) {
        if !self.held.remove(symbol) {
            return;
        }
        let mut h = self
            .registry
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        remove(&mut h.per_ip, &self.ip, symbol);
        if let Some(user) = &self.user {
            remove(&mut h.per_user, user, symbol);
        }
    }

    pub(super) fn release_all(&mut self) {
        let mut h = self
            .registry
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for symbol in self.held.drain() {
            remove(&mut h.per_ip, &self.ip, &symbol);
            if let Some(user) = &self.user {
                remove(&mut h.per_user, user, &symbol);
            }
        }
    }

    /// Moves the session's symbols from its user's budget to `user`'s (a token refresh
    /// that names a user for an anonymous session). They are moved whole, even past the
    /// new user's budget: a refresh never unsubscribes for this.
    pub(super) fn move_held(&mut self, user: Option<&str>) {
        let mut h = self
            .registry
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for symbol in &self.held {
            if let Some(old) = &self.user {
                remove(&mut h.per_user, old, symbol);
            }
            if let Some(new) = user {
                add(&mut h.per_user, &new.to_string(), symbol);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::limits::Registry;

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    #[test]
    fn an_address_and_a_user_hold_distinct_symbols_up_to_their_budgets() {
        let r = Arc::new(Registry::default());
        let limits = LimitsConfig {
            max_symbols_per_ip: 3,
            max_symbols_per_user: 2,
            ..LimitsConfig::default()
        };
        let ip: IpAddr = [127, 0, 0, 1].into();
        let mut a = r.admit(ip, None, &limits).unwrap();
        let mut b = r.admit(ip, None, &limits).unwrap();
        for s in ["A", "B", "C"] {
            a.hold(&sym(s), &limits).unwrap();
        }
        // Symbols another session of the address holds cost nothing more; new ones do.
        b.hold(&sym("A"), &limits).unwrap();
        assert_eq!(
            b.hold(&sym("D"), &limits),
            Err(BudgetRefusal::Ip(3)),
            "a fourth distinct symbol from one address"
        );
        a.release(&sym("B"));
        b.hold(&sym("D"), &limits).unwrap();
        // A session that ends gives its symbols back.
        drop(b);
        a.hold(&sym("E"), &limits).unwrap();

        let mut u = r.admit([10, 0, 0, 1].into(), Some("u"), &limits).unwrap();
        let mut v = r.admit([10, 0, 0, 2].into(), Some("u"), &limits).unwrap();
        u.hold(&sym("A"), &limits).unwrap();
        v.hold(&sym("B"), &limits).unwrap();
        assert_eq!(u.hold(&sym("C"), &limits), Err(BudgetRefusal::User(2)));
        v.hold(&sym("A"), &limits).unwrap();
        drop(u);
        drop(v);
        let mut w = r.admit([10, 0, 0, 3].into(), Some("u"), &limits).unwrap();
        w.hold(&sym("X"), &limits).unwrap();
        w.hold(&sym("Y"), &limits).unwrap();
    }
}
