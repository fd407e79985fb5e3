//! `backup --dry-run`: the plan, the databases, the cluster as it is, and
//! the predicted rounds and downtime; nothing is read or written.

use std::sync::Arc;

use haul_mover::bucket_backup as bucket;

use super::report::{BackupPreview, BackupRequest};
use super::stages::{check_request, parent_of, prepare_databases, prepare_globals};
use crate::error::Result;
use crate::pause::{self, Processes};
use crate::predict::{self, Model};
use crate::runs;

/// Plans a backup without reading object data or writing anything; checks
/// that every database answers and that the cluster can be paused.
pub async fn preview(req: &BackupRequest<'_>) -> Result<BackupPreview> {
    check_request(req)?;
    let pause = match &req.pause {
        Some(spec) => Some(
            pause::control(spec.clone(), Arc::new(Processes))
                .check()
                .await?,
        ),
        None => None,
    };
    let parent = parent_of(req.repo, req.source, &req.databases).await?;
    let plan = match req.source {
        Some(source) => Some(
            bucket::plan(
                req.repo,
                source,
                parent.as_ref().and_then(|p| p.bucket.as_ref()),
            )
            .await?,
        ),
        None => None,
    };
    let prepared = prepare_databases(req).await?;
    prepare_globals(req).await?;
    let databases = futures::future::try_join_all(prepared.iter().map(|p| p.preview())).await?;
    let forecast = match &req.pause {
        Some(_) => {
            let model = Model::from_history(&runs::history(req.repo).await, true);
            let (listed, first) = plan
                .as_ref()
                .map_or((0, 0), |p| (p.objects, p.bytes_to_read));
            let rounds = if plan.is_some() { req.max_rounds } else { 0 };
            Some(predict::forecast(
                &model,
                listed,
                first,
                req.max_downtime.map(|d| d.as_secs_f64()),
                rounds,
            ))
        }
        None => None,
    };
    Ok(BackupPreview {
        parent: parent.map(|p| p.id),
        plan,
        databases,
        pause,
        forecast,
    })
}
