//! Pure decision function (owned by the API engineer): placeholder until it lands.
