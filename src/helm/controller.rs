//! The HelmChart controller (k3s's helm-controller), run by the server: it
//! claims each chart (managed-by annotation and finalizer), keeps the job's
//! ServiceAccount, binding, values Secret and content ConfigMap applied,
//! creates the job when none is current, replaces a stale one only once it
//! is gone (never two at once), reports `JobCreated`/`Failed`, and on
//! deletion runs `helm-delete-NAME` before letting the chart go.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::plan::{self, Desired, Release, Step};
use super::{
    ANNOTATION_MANAGED_BY, ANNOTATION_UNMANAGED, Condition, FINALIZER, HelmChart, HelmChartConfig,
    HelmChartStatus, LABEL_CHART, MANAGED_BY, RELEASE_TYPE,
};
use crate::telemetry::events::Recorder;

/// The field manager of what the controller applies.
const FIELD_MANAGER: &str = "helm-controller";
/// How often a chart is looked at again without a change (a user's
/// `helm uninstall` or a release edited by hand is noticed then).
const RESYNC: Duration = Duration::from_secs(300);

/// Errors of one reconcile (retried after a pause).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
}

/// The controller's settings.
#[derive(Clone)]
pub struct HelmController {
    /// The API, as the helm controller (it binds jobs to cluster-admin).
    pub client: kube::Client,
    /// The job image for charts that name none (`--helm-job-image`).
    pub default_image: String,
    /// Whether kelp's own job image can be built here (a `helm` binary
    /// was found); without it, charts that would use it fail clearly.
    pub helm_available: bool,
    /// The API server's port (bootstrap charts reach it on 127.0.0.1).
    pub api_port: u16,
    /// The process's shared caches (charts, their configs, jobs, Secrets).
    pub informers: crate::runtime::Informers,
}

struct Context {
    settings: HelmController,
    configs: Store<HelmChartConfig>,
    recorder: Recorder,
}

impl HelmController {
    /// Registers the CRDs, then runs until `shutdown`.
    pub async fn run(self, shutdown: crate::runtime::Shutdown) -> anyhow::Result<()> {
        shutdown.until(self.run_forever()).await;
        Ok(())
    }

    /// Runs until dropped.
    async fn run_forever(self) {
        let client = self.client.clone();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for crd in super::crds() {
            let name = crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            while let Err(e) = crds.patch(&name, &params, &Patch::Apply(&crd)).await {
                tracing::warn!(err = %e, crd = %name, "registering the CRD; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        // Charts, their configs, jobs and Secrets from the process's shared
        // caches (the CRDs are registered by now).
        let informers = self.informers.clone();
        let configs = informers.informer::<HelmChartConfig>();
        // A chart planned without its config would run twice.
        if !configs.ready().await {
            return;
        }
        let Some(controller) = crate::runtime::shared_controller::<HelmChart>(&informers).await
        else {
            return;
        };
        let secret_charts = controller.store();
        let secret_configs = configs.store.clone();
        let jobs = informers.informer::<Job>();
        let secrets = informers.informer::<Secret>();
        let context = Arc::new(Context {
            recorder: Recorder::new(client.clone(), MANAGED_BY, None),
            settings: self,
            configs: configs.store.clone(),
        });
        controller
            .watches_shared_stream(configs.objects(), |config: Arc<HelmChartConfig>| {
                Some(ObjectRef::new(&config.name_any()).within(&config.namespace()?))
            })
            .watches_shared_stream(jobs.objects(), |job: Arc<Job>| {
                let chart = job.labels().get(LABEL_CHART)?.clone();
                Some(ObjectRef::new(&chart).within(&job.namespace()?))
            })
            // A values Secret edited re-runs the charts that read it.
            .watches_shared_stream(secrets.objects(), move |secret: Arc<Secret>| {
                let namespace = secret.namespace().unwrap_or_default();
                let name = secret.name_any();
                let charts: Vec<ObjectRef<HelmChart>> = secret_charts
                    .state()
                    .iter()
                    .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
                    .filter(|c| {
                        let config =
                            secret_configs.get(&ObjectRef::new(&c.name_any()).within(&namespace));
                        plan::watched_secrets(c, config.as_deref()).contains(&name)
                    })
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect();
                charts
            })
            .reconcile_all_on(futures::stream::select_all([
                configs.relists(),
                jobs.relists(),
                secrets.relists(),
            ]))
            .run(reconcile, retry, context)
            .for_each(|_| async {})
            .await;
    }
}

fn retry(_: Arc<HelmChart>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!(err = %error, "helm chart reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// Whether this controller manages the chart (k3s's rule).
fn managed(chart: &HelmChart) -> bool {
    (!chart.spec.chart.is_empty() || !chart.spec.chart_content.is_empty())
        && !chart.annotations().contains_key(ANNOTATION_UNMANAGED)
        && chart
            .annotations()
            .get(ANNOTATION_MANAGED_BY)
            .is_none_or(|owner| owner == MANAGED_BY)
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
    }
}

async fn reconcile(chart: Arc<HelmChart>, context: Arc<Context>) -> Result<Action, Error> {
    if !managed(&chart) {
        return Ok(Action::await_change());
    }
    let namespace = chart.namespace().unwrap_or_default();
    let name = chart.name_any();
    let client = context.settings.client.clone();
    let charts: Api<HelmChart> = Api::namespaced(client.clone(), &namespace);
    let deleting = chart.metadata.deletion_timestamp.is_some();
    let has_finalizer = chart.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        return Ok(Action::await_change());
    }
    if !deleting && (!has_finalizer || !chart.annotations().contains_key(ANNOTATION_MANAGED_BY)) {
        // Claim it; the update brings the chart back here.
        let mut finalizers = chart.finalizers().to_vec();
        if !has_finalizer {
            finalizers.push(FINALIZER.into());
        }
        let patch = json!({"metadata": {
            "annotations": {ANNOTATION_MANAGED_BY: MANAGED_BY},
            "finalizers": finalizers,
            "resourceVersion": chart.resource_version(),
        }});
        charts
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(Action::await_change());
    }
    if !matches!(chart.spec.helm_version.as_str(), "" | "v3") {
        if deleting {
            return release_finalizer(&charts, &chart).await;
        }
        context
            .recorder
            .record(
                chart.as_ref(),
                "Warning",
                "UnsupportedVersion",
                "Only Helm v3 charts are supported",
            )
            .await;
        let status = HelmChartStatus {
            job_name: String::new(),
            conditions: vec![condition(
                "Failed",
                true,
                "Unsupported version",
                "Only Helm v3 charts are supported",
            )],
        };
        return set_status(&charts, &chart, status).await;
    }
    let settings = &context.settings;
    let image = if chart.spec.job_image.is_empty() {
        settings.default_image.as_str()
    } else {
        chart.spec.job_image.as_str()
    };
    if image == super::JOB_IMAGE && !settings.helm_available {
        // kelp's deliberate deviation: say why, rather than leave a pod
        // pulling an image that cannot exist.
        if deleting {
            return release_finalizer(&charts, &chart).await;
        }
        let message = "Failed to generate Job: kelp's job image needs a helm binary on the server \
                       (--helm-binary, or helm in PATH); or name an image in spec.jobImage or --helm-job-image";
        let status = HelmChartStatus {
            job_name: String::new(),
            conditions: vec![
                condition("JobCreated", false, "", ""),
                condition("Failed", true, "Job create failed", message),
            ],
        };
        return set_status(&charts, &chart, status).await;
    }

    let config = context
        .configs
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|c| c.as_ref().clone());
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut inputs = plan::Inputs {
        config: config.as_ref(),
        default_image: &settings.default_image,
        api_port: settings.api_port,
        proxy_env: plan::PROXY_ENV
            .iter()
            .filter_map(|k| {
                Some((
                    k.to_string(),
                    std::env::var(k).ok().filter(|v| !v.is_empty())?,
                ))
            })
            .collect(),
        ..Default::default()
    };
    if !deleting {
        for secret in plan::watched_secrets(&chart, config.as_ref()) {
            if let Some(found) = secrets_api.get_opt(&secret).await? {
                inputs
                    .secrets
                    .insert(secret, found.data.unwrap_or_default());
            }
        }
    }
    let desired = plan::desired(&chart, &inputs);
    let release = newest_release(&client, &chart).await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let job_name = plan::job_name(&chart);
    if deleting {
        // The install job goes first: never two jobs at once.
        let install = format!("helm-install-{name}");
        if let Some(job) = jobs.get_opt(&install).await? {
            if job.metadata.deletion_timestamp.is_none() {
                delete_job(&jobs, &install).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    let existing = jobs.get_opt(&job_name).await?;
    let step = plan::step(&desired, existing.as_ref(), &release, deleting);
    if deleting && step == Step::Create {
        // The cache may still hold a chart whose uninstall already finished
        // (its finalizer released): a delete job made for it would outlive it.
        let current = charts.get_opt(&name).await?;
        let ours =
            |c: &HelmChart| c.uid() == chart.uid() && c.finalizers().iter().any(|f| f == FINALIZER);
        if !current.as_ref().is_some_and(ours) {
            return Ok(Action::await_change());
        }
    }
    apply_objects(&client, &namespace, &desired).await?;
    match step {
        Step::Create => {
            let mut job = desired.job.clone();
            plan::stamp(&mut job, &release, &desired.hash);
            match jobs.create(&PostParams::default(), &job).await {
                Ok(_) => {}
                Err(e) if crate::runtime::already_exists(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let (reason, message) = if deleting {
                (
                    "RemoveJob",
                    format!("Uninstalling HelmChart using Job {namespace}/{job_name} "),
                )
            } else {
                (
                    "ApplyJob",
                    format!(
                        "Applying HelmChart from {} using Job {namespace}/{job_name} ",
                        source(&chart)
                    ),
                )
            };
            context
                .recorder
                .record(chart.as_ref(), "Normal", reason, &message)
                .await;
        }
        Step::Replace => {
            delete_job(&jobs, &job_name).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        Step::Keep => {}
        Step::Removed => {
            context
                .recorder
                .record(
                    chart.as_ref(),
                    "Normal",
                    "RemoveJob",
                    &format!(
                        "Uninstalled HelmChart using Job {namespace}/{job_name}, removing resources"
                    ),
                )
                .await;
            remove_objects(&client, &namespace, &name).await?;
            return release_finalizer(&charts, &chart).await;
        }
    }
    if deleting {
        let mut status = chart.status.clone().unwrap_or_default();
        status.job_name = job_name;
        return set_status(&charts, &chart, status).await;
    }
    let failed = existing.as_ref().is_some_and(plan::job_failed) && step == Step::Keep;
    let created = condition(
        "JobCreated",
        true,
        "Job created",
        &format!("Applying HelmChart using Job {namespace}/{job_name}"),
    );
    let status = HelmChartStatus {
        job_name,
        conditions: if failed {
            vec![
                created,
                condition(
                    "Failed",
                    true,
                    "Job failed",
                    "Job has reached configured number of retries without succeeding",
                ),
            ]
        } else {
            vec![created, condition("Failed", false, "", "")]
        },
    };
    let was_failed = chart.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True")
    });
    if failed && !was_failed {
        context
            .recorder
            .record(
                chart.as_ref(),
                "Warning",
                "JobFailed",
                "Job has reached configured number of retries without succeeding",
            )
            .await;
    }
    set_status(&charts, &chart, status).await
}

/// Where the chart comes from, for events.
fn source(chart: &HelmChart) -> String {
    if !chart.spec.chart_content.is_empty() {
        "chartContent".into()
    } else if chart.spec.repo.is_empty() {
        chart.spec.chart.clone()
    } else {
        format!("{} {}", chart.spec.repo, chart.spec.chart)
    }
}

/// The newest release record of the chart (Secrets, or ConfigMaps with the
/// configmap driver), in the target namespace.
async fn newest_release(client: &kube::Client, chart: &HelmChart) -> Result<Release, Error> {
    let target = plan::target_namespace(chart);
    let selector = format!("owner=helm,name={}", chart.name_any());
    // Labels are all it needs: the records themselves (whole charts) stay put.
    let params = ListParams::default().labels(&selector);
    let labels: Vec<_> = if chart.spec.driver == "configmap" {
        Api::<ConfigMap>::namespaced(client.clone(), &target)
            .list_metadata(&params)
            .await?
            .items
            .into_iter()
            .map(|m| m.metadata.labels.unwrap_or_default())
            .collect()
    } else {
        Api::<Secret>::namespaced(client.clone(), &target)
            .list_metadata(&params.fields(&format!("type={RELEASE_TYPE}")))
            .await?
            .items
            .into_iter()
            .map(|m| m.metadata.labels.unwrap_or_default())
            .collect()
    };
    Ok(plan::newest_release(&labels))
}

/// Server-side applies the job's companions (a delete job keeps the
/// values Secret and ConfigMap it no longer mounts until the end).
async fn apply_objects(
    client: &kube::Client,
    namespace: &str,
    desired: &Desired,
) -> Result<(), Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .patch(
            desired
                .service_account
                .metadata
                .name
                .as_deref()
                .unwrap_or_default(),
            &params,
            &Patch::Apply(&desired.service_account),
        )
        .await?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            desired.binding.metadata.name.as_deref().unwrap_or_default(),
            &params,
            &Patch::Apply(&desired.binding),
        )
        .await?;
    if let Some(values) = &desired.values {
        Api::<Secret>::namespaced(client.clone(), namespace)
            .patch(
                values.metadata.name.as_deref().unwrap_or_default(),
                &params,
                &Patch::Apply(values),
            )
            .await?;
    }
    if let Some(content) = &desired.content {
        Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .patch(
                content.metadata.name.as_deref().unwrap_or_default(),
                &params,
                &Patch::Apply(content),
            )
            .await?;
    }
    Ok(())
}

/// Deletes `name` (already gone is fine).
async fn delete<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a job and (first) its pods.
async fn delete_job(jobs: &Api<Job>, name: &str) -> Result<(), Error> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    delete(jobs, name, &params).await
}

/// Removes everything the chart's jobs used, once the release is gone.
async fn remove_objects(client: &kube::Client, namespace: &str, name: &str) -> Result<(), Error> {
    let background = DeleteParams::background();
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    for job in [
        format!("helm-delete-{name}"),
        format!("helm-install-{name}"),
    ] {
        delete(&jobs, &job, &background).await?;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    delete(&accounts, &format!("helm-{name}"), &background).await?;
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    delete(&bindings, &format!("helm-{namespace}-{name}"), &background).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    delete(&secrets, &format!("chart-values-{name}"), &background).await?;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    delete(&maps, &format!("chart-content-{name}"), &background).await
}

async fn release_finalizer(charts: &Api<HelmChart>, chart: &HelmChart) -> Result<Action, Error> {
    let finalizers: Vec<&String> = chart
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": chart.resource_version()}});
    match charts
        .patch(
            &chart.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

async fn set_status(
    charts: &Api<HelmChart>,
    chart: &HelmChart,
    status: HelmChartStatus,
) -> Result<Action, Error> {
    if chart.status.as_ref() != Some(&status) {
        let patch = json!({"status": status});
        charts
            .patch_status(
                &chart.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::HelmChartSpec;

    #[test]
    fn charts_are_managed_by_k3s_rules() {
        let mut chart = HelmChart {
            spec: HelmChartSpec {
                chart: "x".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(managed(&chart));
        chart
            .annotations_mut()
            .insert(ANNOTATION_MANAGED_BY.into(), "someone-else".into());
        assert!(!managed(&chart));
        chart
            .annotations_mut()
            .insert(ANNOTATION_MANAGED_BY.into(), MANAGED_BY.into());
        assert!(managed(&chart));
        chart
            .annotations_mut()
            .insert(ANNOTATION_UNMANAGED.into(), "true".into());
        assert!(!managed(&chart));
        assert!(!managed(&HelmChart::default()));
    }
}
