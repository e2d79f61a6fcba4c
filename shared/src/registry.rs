//! What the two wire registries share, the event types (`events`) and the RPC
//! methods (`rpc`): each maps a wire name to a `data` type checked by serde
//! (unknown fields refused) and garde, with its JSON Schema.

use serde::de::DeserializeOwned;

use crate::error_code::FieldError;

/// Declares a registry: `kind`, an enum of the registered names (`ALL`,
/// `as_str`, `parse`, `parse_data`, `data_schema`, `Display`, a JSON Schema
/// enum of the wire names), and `data`, the untagged enum of the validated
/// `data` types, one variant each. `parse` names the function
/// (`fn(serde_json::Value) -> Result<T, Vec<FieldError>>`) that turns a
/// value into one type's `data`.
macro_rules! wire_registry {
    (
        $(#[$kind_attr:meta])* kind $kind:ident;
        $(#[$data_attr:meta])* data $data_enum:ident;
        parse $parse:ident;
        $( $(#[$doc:meta])* $variant:ident => $wire:literal, $data:ty; )+
    ) => {
        $(#[$kind_attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $kind {
            $( $(#[$doc])* $variant, )+
        }

        $(#[$data_attr])*
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize)]
        #[serde(untagged)]
        pub enum $data_enum {
            $( $variant($data), )+
        }

        impl $kind {
            /// Every registered name.
            pub const ALL: &'static [$kind] = &[$($kind::$variant),+];

            /// The wire name, e.g. `calendar.event.rsvp`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $wire, )+
                }
            }

            /// The registered name `name`, if it is one.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $( $wire => Some(Self::$variant), )+
                    _ => None,
                }
            }

            /// Parses and validates `data` for this name.
            ///
            /// # Errors
            /// Every broken rule, each with its path under `data`.
            pub fn parse_data(
                self,
                data: ::serde_json::Value,
            ) -> Result<$data_enum, Vec<$crate::error_code::FieldError>> {
                match self {
                    $( Self::$variant => $parse::<$data>(data).map($data_enum::$variant), )+
                }
            }

            /// The JSON Schema of this name's `data`.
            pub fn data_schema(
                self,
                generator: &mut ::schemars::SchemaGenerator,
            ) -> ::schemars::Schema {
                match self {
                    $( Self::$variant => generator.root_schema_for::<$data>(), )+
                }
            }
        }

        impl ::std::fmt::Display for $kind {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::schemars::JsonSchema for $kind {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($kind).into()
            }

            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                ::schemars::json_schema!({ "type": "string", "enum": names })
            }
        }
    };
}

pub(crate) use wire_registry;

/// Deserializes `data` into `T` (unknown fields rejected), then runs its garde rules.
pub(crate) fn validate_data<T>(data: serde_json::Value) -> Result<T, Vec<FieldError>>
where
    T: DeserializeOwned + garde::Validate<Context = ()>,
{
    let parsed: T = serde_path_to_error::deserialize(data).map_err(|err| {
        vec![FieldError {
            path: prefixed("data", &err.path().to_string()),
            message: err.into_inner().to_string(),
        }]
    })?;
    parsed
        .validate()
        .map_err(|report| garde_errors("data", &report))?;
    Ok(parsed)
}

/// Turns a garde report into field errors whose paths start at `prefix`.
pub(crate) fn garde_errors(prefix: &str, report: &garde::Report) -> Vec<FieldError> {
    report
        .iter()
        .map(|(path, error)| FieldError {
            path: prefixed(prefix, &path.to_string()),
            message: error.message().to_string(),
        })
        .collect()
}

/// Joins a path prefix and a relative path; serde_path_to_error says `.` for the root.
pub(crate) fn prefixed(prefix: &str, path: &str) -> String {
    match (prefix, path) {
        (p, "" | ".") => p.to_string(),
        ("", path) => path.to_string(),
        (p, path) if path.starts_with('[') => format!("{p}{path}"),
        (p, path) => format!("{p}.{path}"),
    }
}
