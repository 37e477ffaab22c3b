//! Images without a registry: kelp's own pause and helm job images (built
//! from the kelp binary) and image tarballs (OCI layout or docker-archive), written into
//! containerd's content store and image list over its gRPC API. CRI unpacks
//! them into snapshots when a container first uses them.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use containerd_client::services::v1 as api;
use containerd_client::types::Descriptor;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use super::containerd::namespaced;

/// The reference of kelp's pause image; CRI's `sandbox_image`.
pub const PAUSE_IMAGE: &str = concat!("kelp.local/pause:", env!("CARGO_PKG_VERSION"));

const MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_OCI: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
const LIST_DOCKER: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Chunk size for content writes (containerd accepts 16 MiB messages).
const CHUNK: usize = 1 << 20;

/// Writes images into containerd's `k8s.io` namespace.
#[derive(Clone)]
pub struct ImageImporter {
    channel: Channel,
}

impl ImageImporter {
    /// An importer talking to containerd over `channel`.
    pub fn new(channel: Channel) -> Self {
        ImageImporter { channel }
    }

    /// Imports a tarball (OCI layout or docker-archive); returns the image names.
    pub async fn import_tarball(&self, tarball: &Path, scratch: &Path) -> Result<Vec<String>> {
        let dir = scratch.join(format!(
            ".import-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let unpack_dir = dir.clone();
        let file = tarball.to_path_buf();
        let unpacked = tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&unpack_dir)?;
            let reader = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            tar::Archive::new(reader)
                .unpack(&unpack_dir)
                .with_context(|| format!("{} is not a tar archive", file.display()))
        })
        .await?;
        let result = match unpacked {
            Ok(()) => self.import_dir(&dir).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result.with_context(|| format!("importing {}", tarball.display()))
    }

    /// Imports an unpacked OCI layout or docker-archive directory.
    pub async fn import_dir(&self, dir: &Path) -> Result<Vec<String>> {
        let lease = self.lease().await?;
        let result = if dir.join("index.json").exists() {
            self.import_oci(dir, &lease).await
        } else if dir.join("manifest.json").exists() {
            self.import_docker(dir, &lease).await
        } else {
            Err(anyhow::anyhow!(
                "neither an OCI layout (index.json) nor a docker archive (manifest.json)"
            ))
        };
        self.drop_lease(&lease).await;
        result
    }

    async fn import_oci(&self, dir: &Path, lease: &str) -> Result<Vec<String>> {
        let index: Value = read_json(&dir.join("index.json"))?;
        let blob_path = |digest: &str| -> Result<PathBuf> {
            let (algo, hex) = digest.split_once(':').context("malformed digest")?;
            Ok(dir.join("blobs").join(algo).join(hex))
        };
        // Every blob reachable from the index, children before parents so a
        // parent's GC labels never name missing content.
        let mut order = Vec::new();
        let mut stack: Vec<(Value, bool)> = index["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d, false))
            .collect();
        while let Some((desc, expanded)) = stack.pop() {
            let digest = desc["digest"]
                .as_str()
                .context("descriptor without digest")?;
            let media = desc["mediaType"].as_str().unwrap_or_default();
            if expanded || !(is_manifest(media) || is_index(media)) {
                order.push(digest.to_string());
                continue;
            }
            let doc: Value = read_json(&blob_path(digest)?)?;
            stack.push((desc.clone(), true));
            for child in children(&doc) {
                stack.push((child, false));
            }
        }
        let mut done = std::collections::HashSet::new();
        for digest in order {
            if done.insert(digest.clone()) {
                let path = blob_path(&digest)?;
                let labels = gc_labels_of_file(&path)?;
                self.write_file(&path, Some(&digest), labels, lease).await?;
            }
        }
        let mut names = Vec::new();
        for desc in index["manifests"].as_array().into_iter().flatten() {
            let annotations = &desc["annotations"];
            let name = annotations["io.containerd.image.name"]
                .as_str()
                .or_else(|| {
                    annotations["org.opencontainers.image.ref.name"]
                        .as_str()
                        .filter(|n| n.contains('/') || n.contains(':'))
                });
            let Some(name) = name else { continue };
            let name = normalize_reference(name);
            self.put_image(&name, descriptor(desc)?).await?;
            names.push(name);
        }
        if names.is_empty() {
            bail!("the OCI layout names no image (annotation io.containerd.image.name)");
        }
        Ok(names)
    }

    async fn import_docker(&self, dir: &Path, lease: &str) -> Result<Vec<String>> {
        let entries: Vec<Value> = read_json(&dir.join("manifest.json"))?;
        let mut names = Vec::new();
        for entry in entries {
            let config_file = entry["Config"]
                .as_str()
                .context("manifest.json: no Config")?;
            let config = self
                .write_file(&dir.join(config_file), None, HashMap::new(), lease)
                .await?;
            let mut layers = Vec::new();
            for layer in entry["Layers"].as_array().into_iter().flatten() {
                let path = dir.join(layer.as_str().context("manifest.json: bad layer")?);
                let gzip = is_gzip(&path)?;
                let blob = self.write_file(&path, None, HashMap::new(), lease).await?;
                let media = if gzip {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                } else {
                    "application/vnd.docker.image.rootfs.diff.tar"
                };
                layers.push(json!({"mediaType": media, "digest": blob.digest, "size": blob.size}));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_DOCKER,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config.digest, "size": config.size},
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest)?;
            let blob = self.write_bytes(bytes, gc_labels(&manifest), lease).await?;
            for tag in entry["RepoTags"].as_array().into_iter().flatten() {
                let name = normalize_reference(tag.as_str().unwrap_or_default());
                self.put_image(
                    &name,
                    Descriptor {
                        media_type: MANIFEST_DOCKER.into(),
                        digest: blob.digest.clone(),
                        size: blob.size,
                        annotations: HashMap::new(),
                    },
                )
                .await?;
                names.push(name);
            }
        }
        if names.is_empty() {
            bail!("the docker archive tags no image (RepoTags)");
        }
        Ok(names)
    }

    /// Creates or repoints an image record.
    async fn put_image(&self, name: &str, target: Descriptor) -> Result<()> {
        let mut images = api::images_client::ImagesClient::new(self.channel.clone());
        let mut labels = HashMap::new();
        if name == PAUSE_IMAGE {
            // CRI never garbage-collects a pinned image.
            labels.insert("io.cri-containerd.pinned".into(), "pinned".into());
        }
        let image = api::Image {
            name: name.to_string(),
            labels,
            target: Some(target),
            created_at: None,
            updated_at: None,
        };
        let existing = images
            .get(namespaced(api::GetImageRequest { name: name.into() }))
            .await;
        match existing {
            Ok(found) => {
                let same = found
                    .into_inner()
                    .image
                    .and_then(|i| i.target)
                    .map(|t| Some(&t.digest) == image.target.as_ref().map(|t| &t.digest))
                    .unwrap_or(false);
                if !same {
                    images
                        .update(namespaced(api::UpdateImageRequest {
                            image: Some(image),
                            update_mask: None,
                            source_date_epoch: None,
                        }))
                        .await
                        .with_context(|| format!("updating image {name}"))?;
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                images
                    .create(namespaced(api::CreateImageRequest {
                        image: Some(image),
                        source_date_epoch: None,
                    }))
                    .await
                    .with_context(|| format!("creating image {name}"))?;
            }
            Err(status) => return Err(status).with_context(|| format!("looking up image {name}")),
        }
        Ok(())
    }

    async fn exists(&self, digest: &str) -> Result<Option<i64>> {
        let mut content = api::content_client::ContentClient::new(self.channel.clone());
        match content
            .info(namespaced(api::InfoRequest {
                digest: digest.into(),
            }))
            .await
        {
            Ok(info) => Ok(info.into_inner().info.map(|i| i.size)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s).context("content info"),
        }
    }

    /// Streams a file into the content store. `digest` is verified when known,
    /// computed otherwise.
    async fn write_file(
        &self,
        path: &Path,
        digest: Option<&str>,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<Blob> {
        let size = tokio::fs::metadata(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?
            .len() as i64;
        if let Some(digest) = digest
            && self.exists(digest).await?.is_some()
        {
            if !labels.is_empty() {
                self.set_labels(digest, size, labels).await?;
            }
            return Ok(Blob {
                digest: digest.into(),
                size,
            });
        }
        let file = tokio::fs::File::open(path).await?;
        self.write_stream(file, size, digest, labels, lease).await
    }

    async fn write_bytes(
        &self,
        bytes: Vec<u8>,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<Blob> {
        let size = bytes.len() as i64;
        let digest = sha256_digest(&bytes);
        if self.exists(&digest).await?.is_some() {
            if !labels.is_empty() {
                self.set_labels(&digest, size, labels).await?;
            }
            return Ok(Blob { digest, size });
        }
        self.write_stream(
            std::io::Cursor::new(bytes),
            size,
            Some(&digest),
            labels,
            lease,
        )
        .await
    }

    async fn write_stream(
        &self,
        reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        size: i64,
        expected: Option<&str>,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<Blob> {
        use tokio::io::AsyncReadExt;
        let reference = format!("kelp-import-{}", rand::random::<u64>());
        let expected = expected.map(String::from);
        let (tx, rx) = tokio::sync::mpsc::channel::<api::WriteContentRequest>(4);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<String>>();
        let feeder_ref = reference.clone();
        tokio::spawn(async move {
            let mut reader = reader;
            let mut hasher = Sha256::new();
            let mut offset = 0i64;
            let mut buf = vec![0u8; CHUNK];
            let result = async {
                loop {
                    let n = reader.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    let msg = api::WriteContentRequest {
                        action: api::WriteAction::Write as i32,
                        r#ref: feeder_ref.clone(),
                        total: size,
                        offset,
                        data: buf[..n].to_vec(),
                        ..Default::default()
                    };
                    offset += n as i64;
                    if tx.send(msg).await.is_err() {
                        bail!("containerd closed the write stream");
                    }
                }
                let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
                if let Some(expected) = &expected
                    && *expected != digest
                {
                    bail!("content digest {digest} does not match {expected}");
                }
                let commit = api::WriteContentRequest {
                    action: api::WriteAction::Commit as i32,
                    r#ref: feeder_ref.clone(),
                    total: size,
                    offset,
                    expected: digest.clone(),
                    labels,
                    ..Default::default()
                };
                let _ = tx.send(commit).await;
                Ok(digest)
            }
            .await;
            let _ = done_tx.send(result);
        });
        let mut content = api::content_client::ContentClient::new(self.channel.clone());
        let mut request = namespaced(tokio_stream(rx));
        request.metadata_mut().insert(
            "containerd-lease",
            lease.parse().context("lease id is not ASCII")?,
        );
        let outcome = content.write(request).await;
        let digest = done_rx
            .await
            .map_err(|_| anyhow::anyhow!("content writer stopped"))??;
        match outcome {
            Ok(response) => {
                let mut responses = response.into_inner();
                while let Some(msg) = responses.next().await {
                    if let Err(status) = msg
                        && status.code() != tonic::Code::AlreadyExists
                    {
                        return Err(status).context("writing content");
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => return Err(status).context("writing content"),
        }
        Ok(Blob { digest, size })
    }

    async fn set_labels(
        &self,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let mut content = api::content_client::ContentClient::new(self.channel.clone());
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        content
            .update(namespaced(api::UpdateRequest {
                info: Some(api::Info {
                    digest: digest.into(),
                    size,
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .context("labelling content")?;
        Ok(())
    }

    /// A lease keeps fresh content from garbage collection until an image
    /// references it.
    async fn lease(&self) -> Result<String> {
        let mut leases = api::leases_client::LeasesClient::new(self.channel.clone());
        let id = format!("kelp-import-{}", rand::random::<u64>());
        let mut labels = HashMap::new();
        let expire = chrono::Utc::now() + chrono::Duration::hours(1);
        labels.insert("containerd.io/gc.expire".into(), expire.to_rfc3339());
        leases
            .create(namespaced(api::CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .context("creating a containerd lease")?;
        Ok(id)
    }

    async fn drop_lease(&self, id: &str) {
        let mut leases = api::leases_client::LeasesClient::new(self.channel.clone());
        let _ = leases
            .delete(namespaced(api::DeleteRequest {
                id: id.into(),
                sync: false,
            }))
            .await;
    }

    /// Builds (when the kelp binary changed) and imports the pause image.
    pub async fn ensure_pause(&self, work: &Path) -> Result<()> {
        let exe = std::env::current_exe()?;
        let image = BuiltImage {
            reference: PAUSE_IMAGE.into(),
            files: vec![(exe, "pause".into())],
            dirs: Vec::new(),
            config: json!({"Entrypoint": ["/pause"], "WorkingDir": "/"}),
        };
        self.ensure_built(&work.join("pause"), image).await
    }

    /// Builds `image` in `dir` (again only when one of its files changed)
    /// and imports it.
    pub async fn ensure_built(&self, dir: &Path, image: BuiltImage) -> Result<()> {
        let key = image
            .files
            .iter()
            .map(|(source, _)| binary_key(source))
            .collect::<Result<Vec<_>>>()?
            .join("\n");
        let key_file = dir.join("binary");
        if std::fs::read_to_string(&key_file).ok().as_deref() != Some(key.as_str()) {
            let build_dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || build_layout(&image, &build_dir)).await??;
            std::fs::write(&key_file, &key)?;
        }
        self.import_dir(dir).await?;
        Ok(())
    }
}

/// An image kelp makes from files of this machine, with the shared
/// libraries and program interpreter its first file (the kelp binary)
/// runs with.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Its reference.
    pub reference: String,
    /// (file here, path in the image), the kelp binary first.
    pub files: Vec<(PathBuf, String)>,
    /// Directories to make (path, owner uid, mode).
    pub dirs: Vec<(String, u64, u32)>,
    /// The image configuration's `config` (entrypoint, user, env).
    pub config: Value,
}

/// kelp's helm job image `reference`: kelp's binary as `/usr/bin/entry`
/// (klipper-helm's entry point) beside the node's `helm`, run as user
/// 1000 in `/home/klipper-helm`, as klipper-helm's image is.
pub fn helm_job_image(reference: &str, helm: &Path) -> Result<BuiltImage> {
    Ok(BuiltImage {
        reference: reference.into(),
        files: vec![
            (std::env::current_exe()?, "usr/bin/entry".into()),
            (helm.to_path_buf(), "usr/bin/helm".into()),
        ],
        dirs: vec![
            ("home/klipper-helm/".into(), 1000, 0o755),
            ("tmp/".into(), 0, 0o1777),
        ],
        config: json!({
            "Entrypoint": ["/usr/bin/entry"],
            "User": "1000",
            "WorkingDir": "/home/klipper-helm",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/home/klipper-helm", "TIMEOUT="],
        }),
    })
}

/// A blob in the content store.
#[derive(Debug, Clone)]
struct Blob {
    digest: String,
    size: i64,
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

fn is_manifest(media: &str) -> bool {
    media == MANIFEST_OCI || media == MANIFEST_DOCKER
}

fn is_index(media: &str) -> bool {
    media == INDEX_OCI || media == LIST_DOCKER
}

fn is_gzip(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = std::fs::File::open(path)?;
    Ok(file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b])
}

fn descriptor(desc: &Value) -> Result<Descriptor> {
    Ok(Descriptor {
        media_type: desc["mediaType"].as_str().unwrap_or(MANIFEST_OCI).into(),
        digest: desc["digest"].as_str().context("descriptor digest")?.into(),
        size: desc["size"].as_i64().context("descriptor size")?,
        annotations: HashMap::new(),
    })
}

/// The descriptors a manifest or index refers to.
fn children(doc: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(config) = doc.get("config") {
        out.push(config.clone());
    }
    for key in ["layers", "manifests"] {
        out.extend(doc[key].as_array().cloned().unwrap_or_default());
    }
    out
}

/// containerd's garbage-collection references from a manifest or index to
/// its children (what `ctr import` sets).
fn gc_labels(doc: &Value) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    if let Some(d) = doc["config"]["digest"].as_str() {
        labels.insert("containerd.io/gc.ref.content.config".into(), d.into());
    }
    for (i, layer) in doc["layers"].as_array().into_iter().flatten().enumerate() {
        if let Some(d) = layer["digest"].as_str() {
            labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), d.into());
        }
    }
    for (i, m) in doc["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(d) = m["digest"].as_str() {
            labels.insert(format!("containerd.io/gc.ref.content.m.{i}"), d.into());
        }
    }
    labels
}

fn gc_labels_of_file(path: &Path) -> Result<HashMap<String, String>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("missing blob {}", path.display()))?
        .len();
    if len > 4 << 20 {
        return Ok(HashMap::new());
    }
    let bytes = std::fs::read(path)?;
    Ok(serde_json::from_slice::<Value>(&bytes)
        .map(|doc| gc_labels(&doc))
        .unwrap_or_default())
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Docker Hub's normalisation: `busybox` is `docker.io/library/busybox:latest`.
pub fn normalize_reference(name: &str) -> String {
    let (repo, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let first = repo.split('/').next().unwrap_or_default();
    let has_domain =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if digest.is_none() && !last.contains(':') {
        full.push_str(":latest");
    }
    if let Some(d) = digest {
        full.push('@');
        full.push_str(d);
    }
    full
}

/// Identifies a build of the kelp binary without hashing it.
fn binary_key(exe: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(exe)?;
    Ok(format!(
        "{} {} {} {}",
        exe.display(),
        meta.ino(),
        meta.size(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    ))
}

/// Writes an OCI layout whose one layer holds the image's files, the
/// shared libraries of its first and its directories.
fn build_layout(image: &BuiltImage, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)?;
    let layer_path = dir.join("layer.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&layer_path)?);
        builder.mode(tar::HeaderMode::Deterministic);
        let mut added_dirs = std::collections::BTreeSet::new();
        for (path, uid, mode) in &image.dirs {
            append_parents(&mut builder, path.trim_end_matches('/'), &mut added_dirs)?;
            if added_dirs.insert(path.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*uid);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())?;
            }
        }
        for (source, name) in &image.files {
            append_file(&mut builder, source, name, &mut added_dirs)?;
        }
        let exe = &image.files.first().context("an image of no files")?.0;
        let (interp, libraries) = runtime_files(exe)?;
        for lib in &libraries {
            let name = lib.to_string_lossy().trim_start_matches('/').to_string();
            append_file(&mut builder, lib, &name, &mut added_dirs)?;
        }
        if let Some(interp) = interp {
            let real = std::fs::canonicalize(&interp)?;
            if real != interp {
                let name = interp.to_string_lossy().trim_start_matches('/').to_string();
                append_parents(&mut builder, &name, &mut added_dirs)?;
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, &name, &real)?;
            }
        }
        builder.finish()?;
    }
    let layer_digest = file_digest(&layer_path)?;
    let layer_size = std::fs::metadata(&layer_path)?.len();
    std::fs::rename(&layer_path, blobs.join(&layer_digest[7..]))?;
    let config = json!({
        "architecture": crate::platform::arch(),
        "os": crate::platform::OS,
        "config": image.config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = sha256_digest(&config_bytes);
    std::fs::write(blobs.join(&config_digest[7..]), &config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256_digest(&manifest_bytes);
    std::fs::write(blobs.join(&manifest_digest[7..]), &manifest_bytes)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_OCI,
        "manifests": [{"mediaType": MANIFEST_OCI, "digest": manifest_digest, "size": manifest_bytes.len(),
                       "annotations": {"io.containerd.image.name": image.reference}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

fn append_parents(
    builder: &mut tar::Builder<std::fs::File>,
    name: &str,
    added: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    let mut prefix = String::new();
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        prefix.push_str(part);
        prefix.push('/');
        if added.insert(prefix.clone()) {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, &prefix, std::io::empty())?;
        }
    }
    Ok(())
}

fn append_file(
    builder: &mut tar::Builder<std::fs::File>,
    source: &Path,
    name: &str,
    added: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    append_parents(builder, name, added)?;
    let mut file =
        std::fs::File::open(source).with_context(|| format!("reading {}", source.display()))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(file.metadata()?.len());
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, &mut file)?;
    Ok(())
}

fn file_digest(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The program interpreter the binary names and the shared libraries this
/// process has mapped (exactly what the binary needs to run elsewhere).
fn runtime_files(exe: &Path) -> Result<(Option<PathBuf>, Vec<PathBuf>)> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    let exe_real = std::fs::canonicalize(exe)?;
    let mut libs: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .map(PathBuf::from)
        .filter(|p| *p != exe_real)
        .collect();
    libs.sort();
    libs.dedup();
    // The program headers and the interpreter path sit at the start of the file.
    let mut head = Vec::with_capacity(64 * 1024);
    std::fs::File::open(exe)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    Ok((elf_interpreter(&head), libs))
}

/// PT_INTERP of an ELF file (32- or 64-bit, little-endian).
fn elf_interpreter(elf: &[u8]) -> Option<PathBuf> {
    if elf.len() < 0x40 || &elf[..4] != b"\x7fELF" || elf[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?) as usize);
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?) as usize);
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?) as usize);
    let wide = elf[4] == 2;
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?)
    } else {
        (u32_at(0x1c)?, u16_at(0x2a)?, u16_at(0x2c)?)
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? != 3 {
            continue;
        }
        let (offset, size) = if wide {
            (u64_at(ph + 8)?, u64_at(ph + 32)?)
        } else {
            (u32_at(ph + 4)?, u32_at(ph + 16)?)
        };
        let raw = elf.get(offset..offset + size)?;
        let path = raw.split(|b| *b == 0).next()?;
        return Some(PathBuf::from(String::from_utf8_lossy(path).into_owned()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker_hub() {
        assert_eq!(
            normalize_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_reference("busybox:1.28"),
            "docker.io/library/busybox:1.28"
        );
        assert_eq!(normalize_reference("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(
            normalize_reference("kelp.test/busybox:1"),
            "kelp.test/busybox:1"
        );
        assert_eq!(
            normalize_reference("localhost:5000/x"),
            "localhost:5000/x:latest"
        );
        assert_eq!(
            normalize_reference("reg.io/x@sha256:abc"),
            "reg.io/x@sha256:abc"
        );
    }

    #[test]
    fn the_running_binary_names_its_interpreter() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are dynamically linked on every platform kelp builds for.
        let interp = elf_interpreter(&exe).expect("PT_INTERP");
        assert!(interp.to_string_lossy().contains("ld-"), "{interp:?}");
        assert_eq!(elf_interpreter(b"not an elf"), None);
    }

    #[test]
    fn manifests_reference_their_children_for_gc() {
        let doc = json!({"config": {"digest": "sha256:c"}, "layers": [{"digest": "sha256:l0"}, {"digest": "sha256:l1"}]});
        let labels = gc_labels(&doc);
        assert_eq!(labels["containerd.io/gc.ref.content.config"], "sha256:c");
        assert_eq!(labels["containerd.io/gc.ref.content.l.1"], "sha256:l1");
        let index = json!({"manifests": [{"digest": "sha256:m"}]});
        assert_eq!(
            gc_labels(&index)["containerd.io/gc.ref.content.m.0"],
            "sha256:m"
        );
    }
}
