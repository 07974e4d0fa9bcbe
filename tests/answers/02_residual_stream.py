"""Lesson 2 answered by the course's own references (each must earn 0) and by the visible
example's answer typed in (``HARDCODED``, used as the wrong value where there is one)."""

BY_REFERENCE = {
    # The course's model knows its sizes (model.d_model, model.n_layers, model.config): not the module tree.
    "ex1_module_tree": [
        """
        return {"vocab_size": model.config.vocab_size, "d_model": model.d_model, "n_layers": model.n_layers,
                "d_mlp": model.config.intermediate_size,
                "kv_dim": model.config.num_key_value_heads * model.d_model // model.config.num_attention_heads}
        """,
        """
        embedding_path = "model.embed_tokens"
        final_norm_path = "model.norm"
        unembedding_path = "lm_head"
        """,
    ],
    # No course function reads gate_proj; the course's residual and attention captures give its input.
    "ex2_weights_vs_activations": [
        """
        from mi_course.activations import residual_stream as _rs
        from mi_course.lens import component_outputs as _co
        _layer = model.hf.model.layers[10]
        _ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
        with torch.no_grad():
            _mid = _rs(model, prompt)[9][None] + _co(model, _ids)["attn"][10]
            _out = _layer.mlp.gate_proj(_layer.post_attention_layernorm(_mid))
        return _layer.mlp.gate_proj.weight, _out
        """,
        """
        weight_a, act_a = gate_weight_and_output(prompt_a)
        weight_b, act_b = gate_weight_and_output(prompt_b)
        same_weights = torch.equal(weight_a, weight_b)
        same_activations = torch.equal(act_a, act_b)
        """,
    ],
    "ex3_residual_at": """
        from mi_course.activations import residual_stream as _rs
        return _rs(model, prompt, position)
        """,
    "ex4_change_by_position": """
        from mi_course.activations import change_by_position as _cbp
        return _cbp(model, prompt_a, prompt_b, layer)
        """,
    # A creative answer has no reference function: "by the course" is the course's own sentence.
    "ex5_break": """
        my_sentence = "If you throw the ball at the window you might break it"
        my_position = positions_of(model, my_sentence, "break")[0]
        """,
    "ex6_parameter_budget": """
        from mi_course.activations import parameter_budget as _pb
        return _pb(hf_model)
        """,
    "ex7_attention_pattern": """
        from mi_course.activations import attention_patterns as _ap
        return _ap(model, prompt)[layer][None]
        """,
    "ex8_previous_token_head": [
        """
        from mi_course.activations import previous_token_scores as _pts
        return _pts(pattern)
        """,
        """
        from mi_course.activations import previous_token_scores as _pts
        prev_scores = _pts(attention_patterns(model, pt_prompt))
        best_layer, best_head = divmod(int(prev_scores.argmax()), prev_scores.shape[1])
        """,
    ],
}

HARDCODED = {
    "ex1_module_tree": [
        'return {"vocab_size": 49152, "d_model": 576, "n_layers": 30, "d_mlp": 1536, "kv_dim": 192}',
        """
        embedding_path = "model.embed_tokens"
        final_norm_path = "model.norm"
        unembedding_path = "lm_head"
        """,
    ],
}
