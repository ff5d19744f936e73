//! The admin key of a new node: written once to `<data-dir>/admin.token`, stored as a hash.

use std::io::Write;
use std::path::Path;

use actors::Store;
use actors::store::keys::{Role, new_token};
use anyhow::Context;

/// File name of the admin key in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Creates the admin key if the store has none. The file is written before the hash is
/// stored, so a crash in between leaves no key that nobody holds.
pub async fn ensure_admin_key(store: &Store, data_dir: &Path) -> anyhow::Result<()> {
    if store.has_admin_key().await? {
        return Ok(());
    }
    let token = new_token()?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    store.add_key(&token, "admin", Role::Admin, None).await?;
    tracing::info!(path = %path.display(), "created the admin key");
    Ok(())
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}
