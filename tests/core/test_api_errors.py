from __future__ import annotations

import json


def test_it_answers_401_in_the_error_shape_without_credentials(db, client) -> None:
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "unauthorized",
            "message": response.json()["error"]["message"],
            "details": {},
        }
    }


def test_it_answers_403_for_the_wrong_role(sam, api_token_for, client) -> None:
    response = client.get(
        "/api/model-profiles", headers={"Authorization": f"Bearer {api_token_for(sam)}"}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_it_answers_422_with_details_for_invalid_input(alice, api_token_for, client) -> None:
    response = client.put(
        "/api/model-profiles/teacher",
        data=json.dumps({"max_concurrency": "many"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_token_for(alice)}"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["details"]["errors"]


def test_it_serves_openapi_docs_to_logged_in_users_only(sam, client, client_for) -> None:
    assert client.get("/api/docs").status_code == 302
    assert client.get("/api/openapi.json").status_code == 302
    assert client_for(sam).get("/api/docs").status_code == 200
    schema = client_for(sam).get("/api/openapi.json").json()
    assert "/api/health" in schema["paths"]
