//! The rings between shards: one rtrb SPSC ring per ordered pair, wired at
//! start-up, plus a doorbell per shard that wakes it when a ring has data.

use rtrb::{Consumer, Producer, RingBuffer};

use crate::messages::RingMsg;

/// Messages one ring holds before pushes are dropped (and counted).
pub const RING_CAPACITY: usize = 4096;

/// One shard's ends of the mesh.
pub struct ShardLinks {
    /// `to[j]`: ring toward shard j (`None` for itself).
    pub to: Vec<Option<Producer<RingMsg>>>,
    /// `from[j]`: ring from shard j (`None` for itself).
    pub from: Vec<Option<Consumer<RingMsg>>>,
    /// `doorbells[j]` wakes shard j.
    pub doorbells: Vec<flume::Sender<()>>,
    /// This shard's doorbell.
    pub doorbell: flume::Receiver<()>,
}

/// Wires the full mesh for `n` shards.
pub fn wire(n: usize) -> Vec<ShardLinks> {
    let bells: Vec<(flume::Sender<()>, flume::Receiver<()>)> =
        (0..n).map(|_| flume::bounded(1)).collect();
    let mut links: Vec<ShardLinks> = (0..n)
        .map(|i| ShardLinks {
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
            doorbells: bells.iter().map(|(tx, _)| tx.clone()).collect(),
            doorbell: bells[i].1.clone(),
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (p, c) = RingBuffer::new(RING_CAPACITY);
                links[i].to[j] = Some(p);
                links[j].from[i] = Some(c);
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecast_media::ChannelId;

    #[test]
    fn every_ordered_pair_has_a_ring() {
        let mut links = wire(3);
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(links[i].to[j].is_some(), i != j);
                assert_eq!(links[j].from[i].is_some(), i != j);
            }
        }
        let p = links[0].to[2].as_mut().unwrap();
        assert!(p.push(RingMsg::Keyframe(ChannelId(5), None)).is_ok());
        let c = links[2].from[0].as_mut().unwrap();
        assert!(matches!(c.pop(), Ok(RingMsg::Keyframe(ChannelId(5), None))));
    }
}
