//! Checking a ServiceAccount token with the API server (`TokenReview`), for the agent's join:
//! the DaemonSet's pods carry a projected token with Cellwall's own audience, bound to their
//! pod and node, and the manager asks the API server who holds it instead of trusting a
//! shared bootstrap secret.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

/// The pod-bound claims the API server puts in a reviewed token's `extra` (Kubernetes 1.30+).
pub const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// Who holds an authenticated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// `system:serviceaccount:NAMESPACE:NAME` for a ServiceAccount.
    pub username: String,
    /// The audiences the API server found the token valid for (of those asked).
    pub audiences: Vec<String>,
    /// The node of the pod the token is bound to, when it is bound to one.
    pub node: Option<String>,
    pub pod: Option<String>,
}

/// Asks the API server whether `token` is valid for `audience`. `Ok(Err(why))`: it is not
/// (unknown, expired, its pod gone, another audience), with the API server's reason.
pub async fn review_token(
    client: &kube::Client,
    token: &str,
    audience: &str,
) -> Result<Result<Reviewed, String>, kube::Error> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![audience.to_string()]),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Ok(Err(status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "the token is not valid".into())));
    }
    let user = status.user.unwrap_or_default();
    let extra = user.extra.unwrap_or_default();
    let one = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
    Ok(Ok(Reviewed {
        username: user.username.unwrap_or_default(),
        audiences: status.audiences.unwrap_or_default(),
        node: one(NODE_NAME),
        pod: one(POD_NAME),
    }))
}

/// A client for `kubeconfig` (its current context, or `context`), for reviews.
pub async fn client(
    kubeconfig: &std::path::Path,
    context: Option<&str>,
) -> Result<kube::Client, crate::KubeError> {
    crate::read::connect(kubeconfig, context)
        .await
        .map(|(c, _, _)| c)
}
