//! Decoded inputs shared between the stages of one process: the local executor runs stages on
//! threads of one process, and at a million users every train and evaluate stage decoded its
//! own copy of the same data set (500 MB) and task set (330 MB).
//!
//! Owns [`decode_shared`]: one decoded value per (artifact digest, type), handed out as an
//! `Arc` and held here only weakly, so it lives exactly as long as some stage holds it (or a
//! run's [`KeptValues`] keeps it) and a later stage decodes it again; and [`KeptValues`]. Must
//! not change what a stage sees: the digest names the bytes, so every holder sees the value
//! those bytes decode to.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::StageError;

type Slot = Arc<Mutex<Weak<dyn Any + Send + Sync>>>;

/// Decoded values a run keeps alive between the stages that read them: without it, a value
/// lives only while some stage holds it, and at the end of a run the stages that read the same
/// data set one after another (`embeddings`, then `evaluate`) decoded it one after another.
/// The local executor holds one for a run and releases a producer's values once no stage that
/// reads that producer runs, checked after it starts the next stages (`exec::local`).
#[derive(Default)]
pub struct KeptValues {
    by_digest: Mutex<HashMap<String, Vec<Arc<dyn Any + Send + Sync>>>>,
}

impl KeptValues {
    /// Keeps `value`, decoded from the artifact with `digest`, until [`KeptValues::release`].
    pub fn keep(&self, digest: &str, value: Arc<dyn Any + Send + Sync>) {
        let mut by_digest = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        let kept = by_digest.entry(digest.to_string()).or_default();
        if !kept.iter().any(|held| Arc::ptr_eq(held, &value)) {
            kept.push(value);
        }
    }

    /// Lets go of the values decoded from the artifact with `digest` (stages holding them keep
    /// them until they end).
    pub fn release(&self, digest: &str) {
        self.by_digest.lock().unwrap_or_else(|e| e.into_inner()).remove(digest);
    }

    /// How many artifacts have values kept.
    pub fn artifacts(&self) -> usize {
        self.by_digest.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One slot per (digest, type); a slot's lock is held while its value decodes, so two stages
/// that want the same artifact decode it once, and other artifacts do not wait.
static SLOTS: LazyLock<Mutex<HashMap<(String, TypeId), Slot>>> = LazyLock::new(Default::default);

/// The value of the artifact with `digest` as a `T`: the one a running stage already holds, or
/// `decode()`'s, kept (weakly) for the next.
pub fn decode_shared<T: Any + Send + Sync>(
    digest: &str,
    decode: impl FnOnce() -> Result<T, StageError>,
) -> Result<Arc<T>, StageError> {
    let slot = {
        let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the slots of values nobody holds (a slot no other thread has is never locked).
        slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.try_lock().map_or(true, |held| held.strong_count() > 0));
        slots
            .entry((digest.to_string(), TypeId::of::<T>()))
            .or_insert_with(|| Arc::new(Mutex::new(Weak::<T>::new())))
            .clone()
    };
    let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = held.upgrade() {
        return Ok(value.downcast::<T>().expect("a slot is keyed by its type"));
    }
    let value = Arc::new(decode()?);
    let erased: Arc<dyn Any + Send + Sync> = value.clone();
    *held = Arc::downgrade(&erased);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_value_is_decoded_once_and_shared() {
        let first = decode_shared("digest-a", || Ok(vec![1u32, 2, 3])).unwrap();
        let second = decode_shared::<Vec<u32>>("digest-a", || panic!("decoded twice")).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn a_value_no_stage_holds_is_decoded_again() {
        let first = decode_shared("digest-b", || Ok(String::from("x"))).unwrap();
        drop(first);
        let mut decoded = false;
        let again = decode_shared("digest-b", || {
            decoded = true;
            Ok(String::from("x"))
        })
        .unwrap();
        assert!(decoded);
        assert_eq!(*again, "x");
    }

    #[test]
    fn the_same_digest_as_another_type_is_its_own_value() {
        let bytes = decode_shared("digest-c", || Ok(vec![7u8])).unwrap();
        let words = decode_shared("digest-c", || Ok(vec![7u32])).unwrap();
        assert_eq!((bytes[0], words[0]), (7, 7));
    }

    #[test]
    fn a_failed_decode_is_an_error_and_leaves_nothing_behind() {
        let failed = decode_shared::<u8>("digest-d", || Err(StageError::Failed("bad".into())));
        assert!(failed.is_err());
        assert_eq!(*decode_shared("digest-d", || Ok(5u8)).unwrap(), 5);
    }
}
