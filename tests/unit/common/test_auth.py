from flame_service.auth import Caller, bearer, hash_token, new_token, token_matches


def test_tokens_are_random_and_only_the_hash_matches() -> None:
    a, b = new_token("user"), new_token("user")
    assert a != b and a.startswith("flm_user_")
    assert token_matches(a, hash_token(a))
    assert not token_matches(b, hash_token(a))


def test_caller_round_trips_through_metadata() -> None:
    c = Caller("user", "u-1")
    assert Caller.from_metadata(list(c.metadata())) == c
    assert Caller.from_metadata([("x-flame-scope", "root"), ("x-flame-subject", "x")]) is None
    assert bearer([("authorization", "Bearer abc ")]) == "abc"
