//! The tenants' credentials and quota settings: what every call's authentication reads, behind
//! a lock of its own ([`super::state::Scheduler::tenants`]) so checking a token never waits for
//! a placement decision. Tenant names and ids live in the catalog; this book is indexed by the
//! same `TenantId.0`.

use sandstorm_naming::TenantId;

use super::auth::{self, Caller, Presented, TokenHash};
use super::error::ApiError;
use super::quota::Quotas;
use super::store::QuotaSettings;

#[derive(Debug)]
pub struct TenantBook {
    admin_hash: TokenHash,
    /// Token hash per tenant.
    tokens: Vec<TokenHash>,
    /// Quota settings per tenant, as the admin set them.
    settings: Vec<QuotaSettings>,
    /// Bumped by every change of the quotas or of the storage nodes: a storage node that has
    /// not acknowledged this version is sent its allowances again when it next registers.
    allowances_version: u64,
}

impl TenantBook {
    pub fn new(admin_hash: TokenHash) -> Self {
        Self {
            admin_hash,
            tokens: Vec::new(),
            settings: Vec::new(),
            allowances_version: 1,
        }
    }

    /// Adds the next tenant (its id is the number of tenants before it).
    pub fn add(&mut self, token: TokenHash, settings: QuotaSettings) -> TenantId {
        self.tokens.push(token);
        self.settings.push(settings);
        self.allowances_version += 1;
        TenantId(u32::try_from(self.tokens.len() - 1).unwrap_or(u32::MAX))
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks a presented token against the stored hashes.
    pub fn authenticate(&self, presented: Presented) -> Result<Caller, ApiError> {
        match presented {
            Presented::Admin { token } => {
                if auth::matches(&token, &self.admin_hash) {
                    Ok(Caller::Admin)
                } else {
                    Err(ApiError::BadToken {
                        who: "the admin".into(),
                    })
                }
            }
            Presented::Tenant { tenant, token } => {
                let stored = self
                    .tokens
                    .get(tenant.0 as usize)
                    .ok_or(ApiError::UnknownTenant(tenant))?;
                if auth::matches(&token, stored) {
                    Ok(Caller::Tenant(tenant))
                } else {
                    Err(ApiError::BadToken {
                        who: tenant.to_string(),
                    })
                }
            }
        }
    }

    pub fn token_hash(&self, tenant: TenantId) -> Option<TokenHash> {
        self.tokens.get(tenant.0 as usize).copied()
    }

    /// The settings as the admin set them (the defaults for an unknown tenant).
    pub fn settings(&self, tenant: TenantId) -> QuotaSettings {
        self.settings
            .get(tenant.0 as usize)
            .copied()
            .unwrap_or_default()
    }

    /// The quotas in force for `tenant` (the defaults for an unknown one).
    pub fn quotas(&self, tenant: TenantId) -> Quotas {
        Quotas::resolve(&self.settings(tenant))
    }

    /// Replaces a known tenant's settings; false for an unknown tenant.
    pub fn set(&mut self, tenant: TenantId, settings: QuotaSettings) -> bool {
        let Some(slot) = self.settings.get_mut(tenant.0 as usize) else {
            return false;
        };
        *slot = settings;
        self.allowances_version += 1;
        true
    }

    /// The version of the storage nodes' allowances.
    pub fn allowances_version(&self) -> u64 {
        self.allowances_version
    }

    /// Every storage node's allowances changed (their number did).
    pub fn allowances_changed(&mut self) {
        self.allowances_version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_against_the_right_tenant_and_changes_bump_the_version() {
        let admin = auth::admin_token("77");
        let mut book = TenantBook::new(auth::hash(&admin));
        let t0 = auth::tenant_token(TenantId(0), "11");
        let t1 = auth::tenant_token(TenantId(1), "22");
        let v0 = book.allowances_version();
        assert_eq!(
            book.add(auth::hash(&t0), QuotaSettings::default()),
            TenantId(0)
        );
        assert_eq!(
            book.add(auth::hash(&t1), QuotaSettings::default()),
            TenantId(1)
        );
        assert!(book.allowances_version() > v0);

        let check = |token: &str| {
            let presented = auth::parse(&format!("Bearer {token}")).expect("well formed");
            book.authenticate(presented)
        };
        assert_eq!(check(&t1).unwrap(), Caller::Tenant(TenantId(1)));
        assert_eq!(check(&admin).unwrap(), Caller::Admin);
        // Tenant 1's secret under tenant 0's id is a bad token, not tenant 1.
        let forged = auth::tenant_token(TenantId(0), "22");
        assert!(matches!(check(&forged), Err(ApiError::BadToken { .. })));
        let stranger = auth::tenant_token(TenantId(9), "22");
        assert!(matches!(
            check(&stranger),
            Err(ApiError::UnknownTenant(TenantId(9)))
        ));

        let v = book.allowances_version();
        assert!(!book.set(TenantId(5), QuotaSettings::default()));
        assert_eq!(
            book.allowances_version(),
            v,
            "an unknown tenant changes nothing"
        );
        assert!(book.set(TenantId(1), QuotaSettings::default()));
        assert!(book.allowances_version() > v);
    }
}
