//! Row ids minted by two processes in the same millisecond can be equal.
//! The store recognises the primary key's rejection, and the API writes
//! again with a fresh id instead of failing the request.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use common::{open_engine, Engine};
use infinity_store::{
    ids::shard_of, with_fresh_ids, Id, NewUpload, NewUser, SessionRecord, Store, StoreError,
    StoreResult, UploadRecord,
};

async fn uploader(store: &dyn Store) -> Id {
    let user = NewUser {
        username: "uploader".into(),
        email: "uploader@example.com".into(),
        password_hash: "not a hash".into(),
    };
    store.create_user(user, Vec::new()).await.unwrap().id
}

fn new_upload(id: Id, user_id: Id) -> NewUpload {
    NewUpload {
        id,
        user_id,
        source_digest: "cd".repeat(32),
        format: "JPEG".into(),
        width: 10,
        height: 10,
        animated: false,
    }
}

/// Opens the engine in `data` with an uploader and an upload whose id is
/// therefore taken, and returns the engine, the uploader and that id.
async fn engine_with_taken_id(data: &std::path::Path) -> (Engine, Id, Id) {
    let engine = open_engine(data).await;
    let user = uploader(engine.store.as_ref()).await;
    let taken = engine.store.next_id(shard_of(user));
    engine
        .store
        .create_upload(new_upload(taken, user), Vec::new())
        .await
        .unwrap();
    (engine, user, taken)
}

/// Creates an upload with `id`, counting the call in `calls`.
async fn create_upload(
    store: &dyn Store,
    calls: &AtomicUsize,
    id: Id,
    user: Id,
) -> StoreResult<UploadRecord> {
    calls.fetch_add(1, Ordering::SeqCst);
    store.create_upload(new_upload(id, user), Vec::new()).await
}

#[tokio::test]
async fn taken_id_is_recognised() {
    let data = tempfile::tempdir().unwrap();
    let (engine, user, id) = engine_with_taken_id(data.path()).await;
    let store = &engine.store;

    let again = store
        .create_upload(new_upload(id, user), Vec::new())
        .await
        .unwrap_err();
    assert!(again.is_id_taken(), "{again}");

    // Other unique keys are not ids: a taken username or session token.
    let twin = NewUser {
        username: "uploader".into(),
        email: "twin@example.com".into(),
        password_hash: "not a hash".into(),
    };
    let taken = store.create_user(twin, Vec::new()).await.unwrap_err();
    assert!(!taken.is_id_taken(), "{taken}");
    assert!(matches!(taken, StoreError::Taken(_)), "{taken}");
    let session = SessionRecord {
        token_digest: "ef".repeat(32),
        user_id: user,
        created_at: Utc::now(),
        expires_at: Utc::now(),
    };
    engine
        .sessions
        .create_session(session.clone())
        .await
        .unwrap();
    let repeated = engine.sessions.create_session(session).await.unwrap_err();
    assert!(!repeated.is_id_taken(), "{repeated}");
}

#[tokio::test]
async fn taken_id_is_replaced() {
    let data = tempfile::tempdir().unwrap();
    let (engine, user, taken) = engine_with_taken_id(data.path()).await;
    let store = &engine.store;

    // The first attempt uses the taken id, as a second node would have.
    let calls = AtomicUsize::new(0);
    let upload = with_fresh_ids(|| {
        let id = if calls.load(Ordering::SeqCst) == 0 {
            taken
        } else {
            store.next_id(shard_of(user))
        };
        create_upload(store.as_ref(), &calls, id, user)
    })
    .await
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_ne!(upload.id, taken);
}

#[tokio::test]
async fn taken_id_gives_up_after_five_attempts() {
    let data = tempfile::tempdir().unwrap();
    let (engine, user, taken) = engine_with_taken_id(data.path()).await;
    let store = &engine.store;

    let calls = AtomicUsize::new(0);
    let error = with_fresh_ids(|| create_upload(store.as_ref(), &calls, taken, user))
        .await
        .unwrap_err();
    assert!(error.is_id_taken(), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}
