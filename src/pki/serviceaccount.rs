//! Service-account tokens: ES256 JWTs signed with the cluster's
//! service-account key, with the claims upstream's TokenRequest issues.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer kelp puts in tokens (upstream's default for in-cluster issuers).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Claims of a bound service-account token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (seconds since epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// The Kubernetes-specific part.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// `kubernetes.io` claims: the namespace and service account (and bound pod).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KubernetesClaims {
    /// Namespace.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: Ref,
    /// The pod the token is bound to, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod: Option<Ref>,
}

/// Name and uid of an object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ref {
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// Signs and verifies service-account tokens.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Errors of token handling.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key could not be read.
    #[error("service-account key: {0}")]
    Key(String),
    /// The token is malformed, expired or not ours.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl TokenSigner {
    /// From the PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, TokenError> {
        let encoding =
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?;
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| TokenError::Key(e.to_string()))?;
        let decoding = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(Self { encoding, decoding })
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verifies signature, issuer and expiry; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.validate_aud = false;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "system:serviceaccount:default:builder".into(),
            iss: ISSUER.into(),
            aud: vec![ISSUER.into()],
            exp: now + exp_offset,
            iat: now,
            nbf: now,
            kubernetes: KubernetesClaims {
                namespace: "default".into(),
                serviceaccount: Ref {
                    name: "builder".into(),
                    uid: "u1".into(),
                },
                pod: None,
            },
        }
    }

    #[test]
    fn signs_and_verifies() {
        let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
        let signer = TokenSigner::from_pem(&pem).expect("signer");
        let token = signer.sign(&claims(3600)).expect("sign");
        assert_eq!(
            signer.verify(&token).expect("verify").sub,
            "system:serviceaccount:default:builder"
        );
        let expired = signer.sign(&claims(-3600)).expect("sign");
        assert!(signer.verify(&expired).is_err());
        let other =
            TokenSigner::from_pem(&rcgen::KeyPair::generate().expect("key").serialize_pem())
                .expect("other");
        assert!(other.verify(&token).is_err());
    }
}
