//! Decoded inputs shared between the stages of one process: the local executor runs stages on
//! threads of one process, and at a million users every train and evaluate stage decoded its
//! own copy of the same data set (500 MB) and task set (330 MB).
//!
//! Owns [`decode_shared`]: one decoded value per (artifact digest, type), handed out as an
//! `Arc` and held here only weakly, so it lives exactly as long as some stage holds it and a
//! later stage decodes it again; and [`Lingering`], which a run holds so that the latest value
//! of each type also lives between its stages: stages run one after another (`-j 1`, or an
//! evaluate stage after its train stage) then do not decode the data set and the task set again
//! (at a million users, most of a 10 s evaluate stage). Must not change what a stage sees: the
//! digest names the bytes, so every holder sees the value those bytes decode to.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::StageError;

type Slot = Arc<Mutex<Weak<dyn Any + Send + Sync>>>;

/// One slot per (digest, type); a slot's lock is held while its value decodes, so two stages
/// that want the same artifact decode it once, and other artifacts do not wait.
static SLOTS: LazyLock<Mutex<HashMap<(String, TypeId), Slot>>> = LazyLock::new(Default::default);

/// The latest value [`decode_shared`] handed out of each type (at most one data set and one
/// task set), held strongly for as long as this lives: a run's executor keeps one for the run.
#[derive(Default)]
pub struct Lingering {
    latest: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

/// The value of the artifact with `digest` as a `T`: the one a running stage already holds (or
/// `lingering` keeps), or `decode()`'s, kept (weakly) for the next, and by `lingering` until a
/// newer value of its type replaces it.
pub fn decode_shared<T: Any + Send + Sync>(
    digest: &str,
    lingering: Option<&Lingering>,
    decode: impl FnOnce() -> Result<T, StageError>,
) -> Result<Arc<T>, StageError> {
    let value = decode_or_share(digest, decode)?;
    if let Some(lingering) = lingering {
        let erased: Arc<dyn Any + Send + Sync> = value.clone();
        lingering.latest.lock().unwrap_or_else(|e| e.into_inner()).insert(TypeId::of::<T>(), erased);
    }
    Ok(value)
}

/// [`decode_shared`] without lingering.
fn decode_or_share<T: Any + Send + Sync>(
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
        let first = decode_shared("digest-a", None, || Ok(vec![1u32, 2, 3])).unwrap();
        let second = decode_shared::<Vec<u32>>("digest-a", None, || panic!("decoded twice")).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn a_value_no_stage_holds_is_decoded_again() {
        let first = decode_shared("digest-b", None, || Ok(String::from("x"))).unwrap();
        drop(first);
        let mut decoded = false;
        let again = decode_shared("digest-b", None, || {
            decoded = true;
            Ok(String::from("x"))
        })
        .unwrap();
        assert!(decoded);
        assert_eq!(*again, "x");
    }

    #[test]
    fn the_same_digest_as_another_type_is_its_own_value() {
        let bytes = decode_shared("digest-c", None, || Ok(vec![7u8])).unwrap();
        let words = decode_shared("digest-c", None, || Ok(vec![7u32])).unwrap();
        assert_eq!((bytes[0], words[0]), (7, 7));
    }

    #[test]
    fn a_lingering_value_outlives_its_holders_until_the_lingering_drops() {
        let lingering = Lingering::default();
        drop(decode_shared("digest-e", Some(&lingering), || Ok(vec![1u64, 2])).unwrap());
        let again = decode_shared::<Vec<u64>>("digest-e", None, || panic!("decoded twice")).unwrap();
        assert_eq!(*again, vec![1, 2]);
        drop(again);
        drop(lingering);
        let mut decoded = false;
        decode_shared("digest-e", None, || {
            decoded = true;
            Ok(vec![1u64, 2])
        })
        .unwrap();
        assert!(decoded, "dropping the lingering let the value go");
    }

    #[test]
    fn a_newer_value_of_the_same_type_replaces_the_lingering_one() {
        let lingering = Lingering::default();
        drop(decode_shared("digest-f", Some(&lingering), || Ok(7i16)).unwrap());
        drop(decode_shared("digest-g", Some(&lingering), || Ok(8i16)).unwrap());
        assert_eq!(*decode_shared::<i16>("digest-g", None, || panic!("decoded twice")).unwrap(), 8);
        let mut decoded = false;
        decode_shared("digest-f", None, || {
            decoded = true;
            Ok(7i16)
        })
        .unwrap();
        assert!(decoded, "only the latest value of a type lingers");
    }

    #[test]
    fn a_failed_decode_is_an_error_and_leaves_nothing_behind() {
        let failed = decode_shared::<u8>("digest-d", None, || Err(StageError::Failed("bad".into())));
        assert!(failed.is_err());
        assert_eq!(*decode_shared("digest-d", None, || Ok(5u8)).unwrap(), 5);
    }
}
