//! JSON Schema of the manifest types with hand-written deserializers (feature `schema`), for
//! the CustomResourceDefinitions `cellwall-kube` generates from the spec types. Each schema
//! says as much of what the deserializer checks as a Kubernetes structural schema can (types,
//! enums, ranges, patterns); what needs more (a selector's operator and values agreeing) is
//! left to the loader, which the API server's copy never bypasses: the manager converts every
//! object it reads with the same code as `cellwall apply`.

use crate::de::{IntOrName, PortNum, ProtocolDe, SelectorDe, Timestamp};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

macro_rules! named {
    ($name:literal) => {
        fn schema_name() -> Cow<'static, str> {
            $name.into()
        }
        fn schema_id() -> Cow<'static, str> {
            concat!(module_path!(), "::", $name).into()
        }
    };
}

/// `metav1.LabelSelector`, as the API server's own schema has it.
impl JsonSchema for SelectorDe {
    named!("LabelSelector");
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "A label selector: matchLabels and matchExpressions, ANDed. Empty selects everything.",
            "properties": {
                "matchLabels": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "maxLength": 63},
                    "description": "Labels that must all be present with these values."
                },
                "matchExpressions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "key": {"type": "string", "minLength": 1, "maxLength": 317},
                            "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                            "values": {"type": "array", "items": {"type": "string", "maxLength": 63}}
                        },
                        "required": ["key", "operator"],
                        "additionalProperties": false,
                        "x-kubernetes-validations": [{
                            "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                            "message": "In and NotIn need at least one value; Exists and DoesNotExist take none"
                        }]
                    }
                }
            },
            "additionalProperties": false
        })
    }
}

/// An RFC 3339 time.
impl JsonSchema for Timestamp {
    named!("Timestamp");
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An RFC 3339 time, such as 2026-12-01T10:00:00Z."
        })
    }
}

/// A port number or an IANA service name (`IntOrString`).
impl JsonSchema for IntOrName {
    named!("PortOrName");
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "A port number 1-65535 or a container port's name (1-15 lowercase letters, digits or '-', at least one letter).",
            "x-kubernetes-validations": [{
                "rule": "type(self) == int ? (self >= 1 && self <= 65535) : (size(self) <= 15 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.matches('[a-z]') && !self.contains('--'))",
                "message": "expected a port number 1-65535 or a port name of 1-15 lowercase letters, digits or '-' with at least one letter"
            }]
        })
    }
}

impl JsonSchema for PortNum {
    named!("PortNum");
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "format": "int32",
            "minimum": 1,
            "maximum": 65535,
            "description": "A port number 1-65535."
        })
    }
}

impl JsonSchema for ProtocolDe {
    named!("Protocol");
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "enum": ["TCP", "UDP", "SCTP"],
            "description": "TCP (the default), UDP or SCTP."
        })
    }
}
