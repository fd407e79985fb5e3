//! Merge-join of two sorted async streams (see `haul_manifest::diff`).

use futures::stream::{self, BoxStream, Stream, StreamExt};
use haul_manifest::diff::{Joined, Keyed, Step, step};

use crate::Result;

/// Joins two key-sorted fallible streams into one stream of [`Joined`].
pub fn join<'a, L, R>(
    left: impl Stream<Item = Result<L>> + Send + 'a,
    right: impl Stream<Item = Result<R>> + Send + 'a,
) -> BoxStream<'a, Result<Joined<L, R>>>
where
    L: Keyed + Send + 'a,
    R: Keyed + Send + 'a,
{
    let state = (left.boxed().peekable(), right.boxed().peekable());
    stream::try_unfold(state, |(mut l, mut r)| async move {
        // Surface errors at the head of either side first.
        if matches!(std::pin::Pin::new(&mut l).peek().await, Some(Err(_))) {
            return Err(l
                .next()
                .await
                .and_then(Result::err)
                .expect("peeked an error"));
        }
        if matches!(std::pin::Pin::new(&mut r).peek().await, Some(Err(_))) {
            return Err(r
                .next()
                .await
                .and_then(Result::err)
                .expect("peeked an error"));
        }
        let lk = std::pin::Pin::new(&mut l)
            .peek()
            .await
            .map(|x| x.as_ref().map(|v| v.key().to_owned()));
        let rk = std::pin::Pin::new(&mut r)
            .peek()
            .await
            .map(|x| x.as_ref().map(|v| v.key().to_owned()));
        let lk = lk.and_then(|x| x.ok());
        let rk = rk.and_then(|x| x.ok());
        let Some(s) = step(lk.as_deref(), rk.as_deref()) else {
            return Ok(None);
        };
        let item = match s {
            Step::Left => Joined::Left(next(&mut l).await?),
            Step::Right => Joined::Right(next(&mut r).await?),
            Step::Both => Joined::Both(next(&mut l).await?, next(&mut r).await?),
        };
        Ok(Some((item, (l, r))))
    })
    .boxed()
}

async fn next<T>(s: &mut (impl Stream<Item = Result<T>> + Unpin)) -> Result<T> {
    s.next().await.expect("peeked an item")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn joins_streams_like_iterators() {
        let a: Vec<Result<String>> = ["a", "c", "d"].iter().map(|s| Ok(s.to_string())).collect();
        let b: Vec<Result<String>> = ["b", "c", "e"].iter().map(|s| Ok(s.to_string())).collect();
        let got: Vec<Joined<String, String>> = join(stream::iter(a), stream::iter(b))
            .try_collect()
            .await
            .unwrap();
        let want: Vec<_> = haul_manifest::diff::merge_join(
            ["a", "c", "d"].map(String::from),
            ["b", "c", "e"].map(String::from),
        )
        .collect();
        assert_eq!(got, want);
    }
}
