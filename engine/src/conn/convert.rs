//! Frames queued for connections that speak another framing (SSE streams,
//! MessagePack WebSockets) are converted on the way into their queue. A fan-out
//! queues the same frame buffer to every local subscriber in a row, so caching
//! the last conversion, keyed by that buffer, converts each publication once per
//! shard rather than once per subscriber.

use bytes::Bytes;

/// The last frame converted, and what it became.
#[derive(Debug, Default)]
pub struct FrameCache {
    frame: Option<Bytes>,
    converted: Option<Bytes>,
}

impl FrameCache {
    /// `convert(frame)`, or the cached result when `frame` is the buffer converted last.
    pub fn get(
        &mut self,
        frame: &Bytes,
        convert: impl FnOnce(&[u8]) -> Option<Bytes>,
    ) -> Option<Bytes> {
        if let Some(f) = &self.frame {
            // Same buffer, same length: the same bytes, since the cache holds a clone
            // and the buffer can neither change nor be freed and reused meanwhile.
            if f.as_ptr() == frame.as_ptr() && f.len() == frame.len() {
                return self.converted.clone();
            }
        }
        self.converted = convert(frame);
        self.frame = Some(frame.clone());
        self.converted.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_buffer_once_until_another_comes() {
        let mut cache = FrameCache::default();
        let mut calls = 0;
        let frame = Bytes::from_static(b"\x81\x02hi");
        let upper = |f: &[u8]| Some(Bytes::from(f.to_ascii_uppercase()));
        let first = cache
            .get(&frame, |f| {
                calls += 1;
                upper(f)
            })
            .unwrap();
        for _ in 0..3 {
            let again = cache
                .get(&frame.clone(), |_| unreachable!("cached"))
                .unwrap();
            assert_eq!(
                again.as_ptr(),
                first.as_ptr(),
                "the same buffer, not a copy"
            );
        }
        assert_eq!(calls, 1);
        // Equal bytes in another buffer are another frame.
        let other = Bytes::copy_from_slice(&frame);
        assert!(cache.get(&other, |f| upper(f)).is_some());
        assert!(cache.get(&frame.slice(1..), |_| None).is_none());
    }
}
