//! The `AppRepository` suite.

use picloud_manager_core::DEFAULT_APP_ID;
use picloud_shared::{AppId, AppSlug};

use crate::Repos;

pub async fn the_default_app_exists_under_its_well_known_id(repos: Repos) {
    assert_eq!(
        DEFAULT_APP_ID.to_string(),
        "00000000-0000-0000-0000-000000000001"
    );
    let app = repos.apps.get(DEFAULT_APP_ID).await.unwrap().unwrap();
    assert_eq!(app.slug, AppSlug::default_app());
    let by_slug = repos
        .apps
        .get_by_slug(&AppSlug::default_app())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_slug, app);
}

pub async fn apps_are_found_by_id_and_slug(repos: Repos) {
    let id = repos.add_app("shop").await;
    let app = repos.apps.get(id).await.unwrap().unwrap();
    assert_eq!(app.slug.as_str(), "shop");
    assert_eq!(app.name, "Test app");
    let by_slug = repos
        .apps
        .get_by_slug(&AppSlug::parse("shop").unwrap())
        .await
        .unwrap();
    assert_eq!(by_slug, Some(app));

    assert_eq!(repos.apps.get(AppId::new()).await.unwrap(), None);
    let missing = AppSlug::parse("nope").unwrap();
    assert_eq!(repos.apps.get_by_slug(&missing).await.unwrap(), None);
}
