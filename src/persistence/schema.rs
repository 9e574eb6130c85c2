//! Diesel table definitions matching `migrations/` (written by hand: no diesel CLI needed).

diesel::table! {
    api_keys (id) {
        id -> Char,
        name -> Varchar,
        description -> Varchar,
        key_hash -> Char,
        tags -> Varchar,
        is_active -> Bool,
        permissions -> Varchar,
        concurrency_limit -> Integer,
        rate_limit_window_minutes -> Integer,
        rate_limit_requests -> Integer,
        rate_limit_cost_micros -> Bigint,
        token_limit -> Bigint,
        daily_cost_limit_micros -> Bigint,
        total_cost_limit_micros -> Bigint,
        weekly_opus_cost_limit_micros -> Bigint,
        weekly_reset_day -> Tinyint,
        weekly_reset_hour -> Tinyint,
        enable_model_restriction -> Bool,
        restricted_models -> Varchar,
        enable_client_restriction -> Bool,
        allowed_clients -> Varchar,
        claude_account_id -> Nullable<Varchar>,
        expiration_mode -> Varchar,
        activation_days -> Integer,
        activation_unit -> Varchar,
        is_activated -> Bool,
        activated_at -> Nullable<Datetime>,
        expires_at -> Nullable<Datetime>,
        created_by -> Varchar,
        created_at -> Datetime,
        updated_at -> Datetime,
        last_used_at -> Nullable<Datetime>,
        deleted_at -> Nullable<Datetime>,
        deleted_by -> Nullable<Varchar>,
    }
}

diesel::table! {
    claude_accounts (id) {
        id -> Char,
        name -> Varchar,
        description -> Varchar,
        account_type -> Varchar,
        base_url -> Nullable<Varchar>,
        credentials_encrypted -> Text,
        proxy_encrypted -> Nullable<Text>,
        token_expires_at -> Nullable<Datetime>,
        scope -> Varchar,
        priority -> Integer,
        schedulable -> Bool,
        is_active -> Bool,
        status -> Varchar,
        status_until -> Nullable<Datetime>,
        error_message -> Varchar,
        max_concurrency -> Integer,
        created_at -> Datetime,
        updated_at -> Datetime,
        last_used_at -> Nullable<Datetime>,
        last_refresh_at -> Nullable<Datetime>,
        group_ids -> Varchar,
        model_cooldowns -> Varchar,
        model_mapping -> Varchar,
        user_agent -> Nullable<Varchar>,
        session_window_start -> Nullable<Datetime>,
        session_window_end -> Nullable<Datetime>,
        session_window_status -> Nullable<Varchar>,
        auto_stop_on_warning -> Bool,
        daily_quota -> Double,
        subscription_info -> Nullable<Varchar>,
    }
}

diesel::table! {
    account_groups (id) {
        id -> Char,
        name -> Varchar,
        description -> Varchar,
        platform -> Varchar,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    admin_users (id) {
        id -> Bigint,
        username -> Varchar,
        password_hash -> Varchar,
        created_at -> Datetime,
        updated_at -> Datetime,
        last_login_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Bigint,
        actor -> Varchar,
        action -> Varchar,
        target_type -> Varchar,
        target_id -> Varchar,
        before_json -> Nullable<Text>,
        after_json -> Nullable<Text>,
        client_addr -> Varchar,
        created_at -> Datetime,
    }
}

diesel::table! {
    usage_records (id) {
        id -> Bigint,
        request_id -> Varchar,
        instance_id -> Nullable<Char>,
        journal_seq -> Nullable<Bigint>,
        upstream_request_id -> Nullable<Varchar>,
        api_key_id -> Char,
        account_id -> Varchar,
        model -> Varchar,
        input_tokens -> Bigint,
        output_tokens -> Bigint,
        cache_create_5m_tokens -> Bigint,
        cache_create_1h_tokens -> Bigint,
        cache_read_tokens -> Bigint,
        cost_micros -> Bigint,
        status_code -> Smallint,
        is_stream -> Bool,
        latency_ms -> Integer,
        usage_date -> Date,
        created_at -> Datetime,
    }
}

diesel::table! {
    journal_checkpoints (instance_id) {
        instance_id -> Char,
        archived_seq -> Bigint,
        last_row_id -> Bigint,
    }
}

diesel::table! {
    usage_minutely (minute) {
        minute -> Datetime,
        requests -> Bigint,
    }
}

diesel::table! {
    usage_daily (usage_date, api_key_id, account_id, model, source) {
        usage_date -> Date,
        api_key_id -> Char,
        account_id -> Varchar,
        model -> Varchar,
        source -> Varchar,
        requests -> Bigint,
        input_tokens -> Bigint,
        output_tokens -> Bigint,
        cache_create_tokens -> Bigint,
        cache_read_tokens -> Bigint,
        cost_micros -> Bigint,
    }
}

diesel::table! {
    kv_entries (entry_key) {
        entry_key -> Varchar,
        entry_value -> Text,
        expires_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    usage_counters (counter_key) {
        counter_key -> Varchar,
        requests -> Bigint,
        input_tokens -> Bigint,
        output_tokens -> Bigint,
        cache_create_tokens -> Bigint,
        cache_read_tokens -> Bigint,
        cost_micros -> Bigint,
        expires_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    concurrency_leases (scope, lease_id) {
        scope -> Varchar,
        lease_id -> Char,
        expires_at -> Datetime,
    }
}

diesel::table! {
    concurrency_scopes (scope) {
        scope -> Varchar,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    api_keys,
    claude_accounts,
    account_groups,
    admin_users,
    audit_log,
    usage_records,
    journal_checkpoints,
    usage_daily,
    usage_minutely,
    kv_entries,
    usage_counters,
    concurrency_leases,
    concurrency_scopes,
);
