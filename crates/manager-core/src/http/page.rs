//! One page shape for every list of the admin API: `{items, next_cursor}`. `next_cursor` is
//! present only when another page follows; it is opaque (the page's last sort key, encoded)
//! and goes back as `?cursor=` to get that page. Lists are keyset-paged, so a page costs
//! the same however far into the list it is, and nothing is counted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// Page size when the request names none.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page a request may ask for.
const MAX_PAGE_SIZE: u32 = 200;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items on this page, in the list's order.
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The paging part of a list's query: `limit` and `cursor`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1 to 200; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; the first page when absent.
    pub cursor: Option<String>,
}

/// A validated page request: how many items, after which sort key `K`.
#[derive(Debug)]
pub(crate) struct PageRequest<K> {
    /// Items on the page.
    pub limit: u32,
    /// The previous page's last sort key.
    pub after: Option<K>,
}

impl<K> PageRequest<K> {
    /// How many items to ask the store for: one more than the page tells whether another
    /// page follows.
    pub(crate) fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// The page of `items` (fetched with [`Self::fetch`]), each shown as `view`, with the
    /// cursor of the next page made from the last item's sort key.
    pub(crate) fn page<T, V>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> K,
        view: impl FnMut(T) -> V,
    ) -> Page<V>
    where
        K: Serialize,
    {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(|last| encode(&key(last)))
        } else {
            None
        };
        Page {
            items: items.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}

impl PageQuery {
    /// The page asked for: 400 `invalid_query` for a size outside 1..=200 or a cursor this
    /// list did not hand out.
    pub(crate) fn request<K: DeserializeOwned>(&self) -> Result<PageRequest<K>, ApiError> {
        Ok(PageRequest {
            limit: page_limit(self.limit)?,
            after: self.cursor.as_deref().map(decode).transpose()?,
        })
    }
}

/// The page size a list request asked for: 400 `invalid_query` outside 1..=200.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if (1..=MAX_PAGE_SIZE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        )))
    }
}

/// A sort key as an opaque cursor.
pub(crate) fn encode(key: &impl Serialize) -> String {
    // A sort key is ids, names and timestamps: serialising it cannot fail.
    let json = serde_json::to_vec(key).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

fn decode<K: DeserializeOwned>(raw: &str) -> Result<K, ApiError> {
    let refused = || ApiError::invalid_query("cursor is not one this list handed out");
    let json = URL_SAFE_NO_PAD.decode(raw).map_err(|_| refused())?;
    serde_json::from_slice(&json).map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_says_whether_another_follows_and_from_where() {
        let request = PageRequest::<u32> {
            limit: 2,
            after: None,
        };
        assert_eq!(request.fetch(), 3);
        let full = request.page(vec![1, 2, 3], |n| *n, |n| n * 10);
        assert_eq!(full.items, vec![10, 20]);
        let cursor = full.next_cursor.unwrap();
        let next: PageRequest<u32> = PageQuery {
            limit: Some(2),
            cursor: Some(cursor),
        }
        .request()
        .unwrap();
        assert_eq!(next.after, Some(2));
        let last = request.page(vec![1, 2], |n| *n, |n| n);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn foreign_cursors_and_sizes_out_of_range_are_refused() {
        for query in [
            PageQuery {
                limit: None,
                cursor: Some("not base64!".into()),
            },
            PageQuery {
                limit: None,
                cursor: Some(URL_SAFE_NO_PAD.encode(b"\"text\"")),
            },
            PageQuery {
                limit: Some(0),
                cursor: None,
            },
            PageQuery {
                limit: Some(201),
                cursor: None,
            },
        ] {
            assert!(query.request::<u32>().is_err(), "{query:?}");
        }
    }
}
