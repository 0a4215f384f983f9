//! The in-memory outbox the dispatcher's tests run on meets the contract every
//! `OutboxStore` must, claim identity included.

use picloud_testkit::outbox::FakeOutboxStore;

picloud_testkit::outbox_store_contract!(
    #[tokio::test(start_paused = true)]
    async fn() {
        FakeOutboxStore::default()
    }
);
