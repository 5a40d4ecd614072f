//! What a run counts, and how the counts of threads and worker processes merge.
//!
//! Latencies go into HDR histograms (nanoseconds, 3 significant figures). Across
//! processes a histogram travels as its V2 serialization in base64, which keeps
//! every bucket count, so the merged histogram is exactly the one a single process
//! would have recorded.

use std::collections::BTreeMap;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram holds (one hour, in ns); larger values are clamped.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// Event counts (cumulative since the start of the run).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Counters {
            $(#[doc = $doc] pub $name: u64,)*
        }

        impl Counters {
            pub fn add(&mut self, o: &Counters) {
                $(self.$name += o.$name;)*
            }
        }
    };
}

counters! {
    attempted: "Connections started (TCP connect issued).",
    up: "Connections that completed the upgrade and their subscriptions.",
    open: "Connections open now (gauge; summed over workers).",
    failed: "Connections that failed before being up.",
    closed: "Connections that were up and then closed by the server or the network.",
    churned: "Connections closed on purpose by the churn scenario.",
    deliveries: "Publications received by subscribers (fanout).",
    echoes: "Echoed messages received (echo).",
    sent: "Messages sent by connections (commands, echo messages).",
    bytes_in: "Bytes read from sockets.",
    missing: "Publications a subscriber never received (gaps and tail).",
    duplicate: "Publications received twice by the same subscriber.",
    out_of_order: "Publications received after a later one.",
    epoch_changes: "Epoch changes seen by subscribers (history lost).",
    subscribe_errors: "Subscribe commands answered with an error.",
    bad_messages: "Messages that could not be understood.",
    pings: "WebSocket pings received from the server (each answered with a pong).",
    live_duplicate: "Duplicates seen so far (counted as they arrive; `duplicate` is counted at the end).",
    live_out_of_order: "Out-of-order deliveries seen so far (counted as they arrive).",
}

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds are valid"))
    }
}

impl Hist {
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
    }

    /// Exact merge: same bounds, so every bucket adds up.
    /// Add `o`'s counts. A histogram spans 1 ns to an hour: half a megabyte of
    /// counts, walked in full by an add or a reset, so empty ones are skipped
    /// (tens of processes merge and reset theirs ten times a second).
    pub fn merge(&mut self, o: &Hist) {
        if o.0.is_empty() {
            return;
        }
        self.0.add(&o.0).expect("histograms share bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Value at percentile `p` (0–100), in ns; 0 when empty.
    pub fn at(&self, p: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_percentile(p)
        }
    }

    /// Smallest value recorded (bucket precision), in ns; 0 when empty.
    pub fn min(&self) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.min()
        }
    }

    pub fn max(&self) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.max()
        }
    }

    pub fn reset(&mut self) {
        if self.0.is_empty() {
            return;
        }
        self.0.reset();
    }

    /// V2 serialization, base64.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut out)
            .expect("writing to a Vec cannot fail");
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub fn decode(s: &str) -> Result<Hist, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("histogram base64: {e}"))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| format!("histogram: {e:?}"))?;
        let mut out = Hist::default();
        out.0
            .add(&h)
            .map_err(|e| format!("histogram bounds: {e:?}"))?;
        Ok(out)
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hist, D::Error> {
        let s = String::deserialize(d)?;
        Hist::decode(&s).map_err(serde::de::Error::custom)
    }
}

/// Everything one thread (or, merged, one process or the whole run) measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Totals {
    pub counters: Counters,
    /// Failures and closes by kind: "refused", "timed out", "closed with code 4008", …
    pub errors: BTreeMap<String, u64>,
    /// Delivery latency (fanout: publish timestamp → receipt) or echo round trip.
    pub latency: Hist,
    /// Time from connect() to the connection being up (upgrade and subscriptions done).
    pub connect: Hist,
    /// Unix ns of the first and last delivery or echo counted while measuring (0: none).
    pub first_delivery_ns: u64,
    pub last_delivery_ns: u64,
    /// Connections subscribed to each channel when the run stopped (index into the channel list).
    pub subscribers: Vec<u64>,
    /// Time from the drain mark (suite: the SIGTERM) to each close of an up connection.
    #[serde(default)]
    pub closes: Hist,
}

impl Totals {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    pub fn merge(&mut self, o: &Totals) {
        self.counters.add(&o.counters);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.latency.merge(&o.latency);
        self.connect.merge(&o.connect);
        self.closes.merge(&o.closes);
        if o.first_delivery_ns != 0
            && (self.first_delivery_ns == 0 || o.first_delivery_ns < self.first_delivery_ns)
        {
            self.first_delivery_ns = o.first_delivery_ns;
        }
        self.last_delivery_ns = self.last_delivery_ns.max(o.last_delivery_ns);
        if self.subscribers.len() < o.subscribers.len() {
            self.subscribers.resize(o.subscribers.len(), 0);
        }
        for (a, b) in self.subscribers.iter_mut().zip(&o.subscribers) {
            *a += b;
        }
    }
}

/// A once-a-second report from a group of threads: cumulative counters, the
/// latencies recorded since the previous tick, and whether the ramp is over.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Tick {
    pub counters: Counters,
    pub interval: Hist,
    /// Every planned connection is up or has failed.
    pub ready: bool,
    /// CPU time (user + system) the process(es) used so far, in seconds.
    #[serde(default)]
    pub cpu_s: f64,
    /// Resident memory of the process(es), bytes (summed over worker processes).
    #[serde(default)]
    pub rss_bytes: u64,
    /// Anonymous resident memory (RssAnon: heap, stacks; not the shared binary), bytes.
    #[serde(default)]
    pub anon_bytes: u64,
    /// Processes whose figures are in here (1 for a group of threads).
    #[serde(default)]
    pub processes: u64,
    /// Unix ns of the latest delivery seen so far (max over threads and processes).
    #[serde(default)]
    pub last_delivery_ns: u64,
}

impl Tick {
    pub fn merge(&mut self, o: &Tick) {
        self.counters.add(&o.counters);
        self.interval.merge(&o.interval);
        self.ready &= o.ready;
        self.cpu_s += o.cpu_s;
        self.rss_bytes += o.rss_bytes;
        self.anon_bytes += o.anon_bytes;
        self.processes += o.processes;
        self.last_delivery_ns = self.last_delivery_ns.max(o.last_delivery_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(values: &[u64], deliveries: u64, err: &str) -> Totals {
        let mut t = Totals::default();
        for &v in values {
            t.latency.record(v);
        }
        t.counters.deliveries = deliveries;
        t.error(err);
        t.subscribers = vec![deliveries, 1];
        t
    }

    #[test]
    fn merge_through_serialization_is_exact() {
        let a: Vec<u64> = (1..=5000).map(|i| i * 997).collect();
        let b: Vec<u64> = (1..=3000).map(|i| 40_000_000 + i * 13_579).collect();
        let (ta, tb) = (totals(&a, 5000, "refused"), totals(&b, 3000, "refused"));
        // Across processes the totals travel as JSON.
        let ta: Totals = serde_json::from_str(&serde_json::to_string(&ta).unwrap()).unwrap();
        let tb: Totals = serde_json::from_str(&serde_json::to_string(&tb).unwrap()).unwrap();
        let mut merged = Totals::default();
        merged.merge(&ta);
        merged.merge(&tb);
        let mut single = Hist::default();
        for &v in a.iter().chain(&b) {
            single.record(v);
        }
        assert_eq!(merged.latency.count(), 8000);
        assert_eq!(merged.counters.deliveries, 8000);
        assert_eq!(merged.errors["refused"], 2);
        assert_eq!(merged.subscribers, vec![8000, 2]);
        for p in [0.0, 50.0, 62.5, 90.0, 99.0, 99.9, 100.0] {
            assert_eq!(merged.latency.at(p), single.at(p), "p{p}");
        }
        assert_eq!(merged.latency.0, single.0);
    }

    #[test]
    fn ticks_merge_readiness() {
        let mut t = Tick {
            ready: true,
            ..Tick::default()
        };
        t.merge(&Tick {
            ready: true,
            ..Tick::default()
        });
        assert!(t.ready);
        t.merge(&Tick::default());
        assert!(!t.ready);
    }
}
