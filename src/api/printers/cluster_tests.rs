//! Tests for the cluster-level printers, with expectations taken from upstream's printers.

use serde_json::json;

use super::super::testutil::{ago, cells, names};

#[test]
fn hpa_v2_targets() {
    let hpa = json!({"apiVersion": "autoscaling/v2", "metadata": {"name": "web", "creationTimestamp": ago(600)},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
        "status": {"currentReplicas": 3, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40, "averageValue": "120m"}}}]}});
    assert_eq!(
        names("autoscaling", "HorizontalPodAutoscaler"),
        [
            "Name",
            "Reference",
            "Targets",
            "MinPods",
            "MaxPods",
            "Replicas",
            "Age"
        ]
    );
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &hpa),
        [
            json!("web"),
            json!("Deployment/web"),
            json!("cpu: 40%/50%"),
            json!("2"),
            json!(10),
            json!(3),
            json!("10m")
        ]
    );
    let fresh = json!({"spec": {"maxReplicas": 5, "metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
        {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}}]}});
    let row = cells("autoscaling", "HorizontalPodAutoscaler", &fresh);
    assert_eq!(
        row[2..5],
        [
            json!("cpu: <unknown>/50%, memory: <unknown>/500Mi + 1 more..."),
            json!("<unset>"),
            json!(5)
        ]
    );
}

#[test]
fn hpa_other_metric_sources() {
    let hpa = json!({"spec": {"metrics": [
        {"type": "External", "external": {"target": {"type": "Value", "value": "100"}}},
        {"type": "Object", "object": {"target": {"type": "AverageValue", "averageValue": "2"}}}]},
        "status": {"currentMetrics": [{"type": "External", "external": {"current": {"value": "75"}}}]}});
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &hpa)[2],
        json!("75/100, <unknown>/2 (avg)")
    );
    let odd = json!({"spec": {"metrics": [{"type": "Weird"},
        {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization"}}}]}});
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &odd)[2],
        json!("<unknown type>, cpu: <unknown>/<auto>")
    );
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &json!({}))[2],
        json!("<none>")
    );
}

#[test]
fn hpa_v1_shape() {
    let hpa = json!({"apiVersion": "autoscaling/v1", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 4,
                 "targetCPUUtilizationPercentage": 80},
        "status": {"currentReplicas": 1, "currentCPUUtilizationPercentage": 35}});
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &hpa)[2],
        json!("cpu: 35%/80%")
    );
    let fresh = json!({"spec": {"targetCPUUtilizationPercentage": 50}});
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &fresh)[2],
        json!("cpu: <unknown>/50%")
    );
    let none = json!({"apiVersion": "autoscaling/v1", "spec": {}});
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &none)[2],
        json!("<none>")
    );
}

#[test]
fn pod_disruption_budgets() {
    let pdb = json!({"metadata": {"name": "db"}, "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        cells("policy", "PodDisruptionBudget", &pdb)[1..4],
        [json!("2"), json!("N/A"), json!(1)]
    );
    let pct = json!({"spec": {"maxUnavailable": "25%"}});
    assert_eq!(
        cells("policy", "PodDisruptionBudget", &pct)[1..4],
        [json!("N/A"), json!("25%"), json!(0)]
    );
}

#[test]
fn ingresses_and_classes() {
    let ing = json!({"metadata": {"name": "web"}, "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}], "tls": [{"hosts": ["a.example.com"]}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.1"}]}}});
    assert_eq!(
        cells("networking.k8s.io", "Ingress", &ing)[1..5],
        [
            json!("nginx"),
            json!("a.example.com,b.example.com"),
            json!("10.0.0.1,10.0.0.2"),
            json!("80, 443")
        ]
    );
    let many = json!({"spec": {"rules": [{"host": "a"}, {}, {"host": "c"}, {"host": "d"}, {"host": "e"}]}});
    assert_eq!(
        cells("networking.k8s.io", "Ingress", &many)[1..5],
        [
            json!("<none>"),
            json!("a,c,d + 2 more..."),
            json!(""),
            json!("80")
        ]
    );
    assert_eq!(
        cells(
            "networking.k8s.io",
            "Ingress",
            &json!({"spec": {"rules": [{}]}})
        )[2],
        json!("*")
    );

    let ic = json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
        "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
    assert_eq!(
        cells("networking.k8s.io", "IngressClass", &ic)[1..3],
        [
            json!("k8s.io/ingress-nginx"),
            json!("IngressParameters.k8s.example.com/external-lb")
        ]
    );
    assert_eq!(
        cells("networking.k8s.io", "IngressClass", &json!({}))[2],
        json!("<none>")
    );
}

#[test]
fn network_policies_and_endpoint_slices() {
    let np = json!({"spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
    assert_eq!(
        cells("networking.k8s.io", "NetworkPolicy", &np)[1],
        json!("role=db")
    );
    assert_eq!(
        cells(
            "networking.k8s.io",
            "NetworkPolicy",
            &json!({"spec": {"podSelector": {}}})
        )[1],
        json!("<none>")
    );

    let es = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80}, {"name": "metrics"}, {}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", &es)[1..4],
        [
            json!("IPv4"),
            json!("80,metrics,*"),
            json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...")
        ]
    );
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", &json!({}))[2..4],
        [json!("<unset>"), json!("<unset>")]
    );
}

#[test]
fn leases_and_priority_classes() {
    let lease =
        json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "cp-1_abc"}});
    assert_eq!(
        cells("coordination.k8s.io", "Lease", &lease)[1],
        json!("cp-1_abc")
    );

    let pc = json!({"metadata": {"name": "system-cluster-critical"}, "value": 2000000000, "globalDefault": false,
                    "preemptionPolicy": "PreemptLowerPriority"});
    let row = cells("scheduling.k8s.io", "PriorityClass", &pc);
    assert_eq!(
        (row[1].clone(), row[2].clone(), row[4].clone()),
        (
            json!(2000000000),
            json!(false),
            json!("PreemptLowerPriority")
        )
    );
}

#[test]
fn role_bindings() {
    assert_eq!(
        names("rbac.authorization.k8s.io", "RoleBinding"),
        ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
    );
    let rb = json!({"metadata": {"name": "admins", "creationTimestamp": ago(60)},
        "roleRef": {"kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                     {"kind": "Group", "name": "ops"}, {"kind": "ServiceAccount", "namespace": "ci", "name": "deployer"}]});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "ClusterRoleBinding", &rb),
        [
            json!("admins"),
            json!("ClusterRole/admin"),
            json!("60s"),
            json!("alice, bob"),
            json!("ops"),
            json!("ci/deployer")
        ]
    );
}

#[test]
fn certificate_signing_requests() {
    assert_eq!(
        names("certificates.k8s.io", "CertificateSigningRequest"),
        [
            "Name",
            "Age",
            "SignerName",
            "Requestor",
            "RequestedDuration",
            "Condition"
        ]
    );
    let csr = json!({"metadata": {"name": "csr-1", "creationTimestamp": ago(30)},
        "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "username": "alice", "expirationSeconds": 86400},
        "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"}});
    assert_eq!(
        cells("certificates.k8s.io", "CertificateSigningRequest", &csr),
        [
            json!("csr-1"),
            json!("30s"),
            json!("kubernetes.io/kube-apiserver-client"),
            json!("alice"),
            json!("24h"),
            json!("Approved,Issued")
        ]
    );
    let denied = json!({"status": {"conditions": [{"type": "Approved"}, {"type": "Denied"}, {"type": "Failed"}]}});
    let row = cells("certificates.k8s.io", "CertificateSigningRequest", &denied);
    assert_eq!(
        row[2..],
        [
            json!("<none>"),
            json!(""),
            json!("<none>"),
            json!("Denied,Failed")
        ]
    );
}

#[test]
fn flow_control() {
    let fs = json!({"metadata": {"name": "exempt"}, "spec": {"priorityLevelConfiguration": {"name": "exempt"},
            "matchingPrecedence": 1}, "status": {"conditions": [{"type": "Dangling", "status": "False"}]}});
    let row = cells("flowcontrol.apiserver.k8s.io", "FlowSchema", &fs);
    assert_eq!(
        (
            row[1].clone(),
            row[2].clone(),
            row[3].clone(),
            row[5].clone()
        ),
        (json!("exempt"), json!(1), json!("<none>"), json!("False"))
    );
    let by_user = json!({"spec": {"distinguisherMethod": {"type": "ByUser"}}});
    let row = cells("flowcontrol.apiserver.k8s.io", "FlowSchema", &by_user);
    assert_eq!(
        (row[3].clone(), row[5].clone()),
        (json!("ByUser"), json!("?"))
    );

    let limited = json!({"metadata": {"name": "workload-low"}, "spec": {"type": "Limited", "limited": {
        "nominalConcurrencyShares": 100, "limitResponse": {"type": "Queue", "queuing": {"queues": 128, "handSize": 6, "queueLengthLimit": 50}}}}});
    assert_eq!(
        cells(
            "flowcontrol.apiserver.k8s.io",
            "PriorityLevelConfiguration",
            &limited
        )[1..6],
        [
            json!("Limited"),
            json!(100),
            json!(128),
            json!(6),
            json!(50)
        ]
    );
    let exempt = json!({"spec": {"type": "Exempt", "exempt": {}}});
    assert_eq!(
        cells(
            "flowcontrol.apiserver.k8s.io",
            "PriorityLevelConfiguration",
            &exempt
        )[1..6],
        [
            json!("Exempt"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );
}

#[test]
fn webhooks_and_runtime_classes() {
    let w = json!({"metadata": {"name": "hooks"}, "webhooks": [{"name": "a"}, {"name": "b"}]});
    assert_eq!(
        cells(
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
            &w
        )[1],
        json!(2)
    );
    assert_eq!(
        cells("node.k8s.io", "RuntimeClass", &json!({"handler": "runc"}))[1],
        json!("runc")
    );
}

#[test]
fn api_services() {
    let local = json!({"metadata": {"name": "v1.apps"}, "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]}});
    assert_eq!(
        cells("apiregistration.k8s.io", "APIService", &local)[1..3],
        [json!("Local"), json!("True")]
    );
    let broken = json!({"spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}},
        "status": {"conditions": [{"type": "Available", "status": "False", "reason": "MissingEndpoints"}]}});
    assert_eq!(
        cells("apiregistration.k8s.io", "APIService", &broken)[1..3],
        [
            json!("kube-system/metrics-server"),
            json!("False (MissingEndpoints)")
        ]
    );
    assert_eq!(
        cells("apiregistration.k8s.io", "APIService", &json!({}))[2],
        json!("Unknown")
    );
}
