//! Acknowledgements in arrival order, as a plain state machine (no I/O).
//!
//! rumqttc requires manual acks to be sent in the order messages arrived, but messages finish
//! (are committed) in any order. Each QoS 1/2 message gets a ticket on arrival; finishing a ticket
//! releases every ack at the head of the queue that is finished.

use std::collections::VecDeque;

/// One arrival, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Pending acks of one connection.
#[derive(Debug)]
pub struct AckQueue<T> {
    /// Ticket number of the queue's head.
    head: u64,
    /// Arrived messages not yet acked, oldest first: the ack payload once finished.
    pending: VecDeque<Option<T>>,
}

impl<T> Default for AckQueue<T> {
    fn default() -> Self {
        AckQueue {
            head: 0,
            pending: VecDeque::new(),
        }
    }
}

impl<T> AckQueue<T> {
    /// Registers an arrival; its ack waits until it and every earlier arrival finished.
    pub fn arrive(&mut self) -> Ticket {
        let t = Ticket(self.head + self.pending.len() as u64);
        self.pending.push_back(None);
        t
    }

    /// Marks `ticket` finished with the ack to send; returns the acks now due, in order.
    /// A ticket from before [`AckQueue::reset`] is ignored.
    pub fn finish(&mut self, ticket: Ticket, ack: T) -> Vec<T> {
        let Some(i) = ticket.0.checked_sub(self.head) else {
            return Vec::new();
        };
        match self.pending.get_mut(i as usize) {
            Some(slot) => *slot = Some(ack),
            None => return Vec::new(),
        }
        let mut due = Vec::new();
        while let Some(Some(_)) = self.pending.front() {
            if let Some(Some(a)) = self.pending.pop_front() {
                due.push(a);
            }
            self.head += 1;
        }
        due
    }

    /// True when nothing waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets every pending ack (the connection dropped: the broker redelivers those messages).
    /// Tickets handed out before are ignored from now on.
    pub fn reset(&mut self) {
        self.head += self.pending.len() as u64;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_leave_in_arrival_order() {
        let mut q = AckQueue::default();
        let (a, b, c) = (q.arrive(), q.arrive(), q.arrive());
        assert!(q.finish(c, 'c').is_empty(), "c waits for a and b");
        assert!(q.finish(b, 'b').is_empty(), "b waits for a");
        assert_eq!(q.finish(a, 'a'), vec!['a', 'b', 'c']);
        assert!(q.is_empty());
        let d = q.arrive();
        assert_eq!(q.finish(d, 'd'), vec!['d']);
    }

    #[test]
    fn stale_tickets_after_reset_are_ignored() {
        let mut q = AckQueue::default();
        let a = q.arrive();
        let b = q.arrive();
        q.reset();
        assert!(q.finish(a, 1).is_empty());
        let c = q.arrive();
        assert!(q.finish(b, 2).is_empty());
        assert_eq!(q.finish(c, 3), vec![3]);
    }
}
